"""The report of an offline evaluation: its text table and its recall-vs-latency plot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from langchain_vq.evaluation.settings import Evaluation


def format_table(evaluation: Evaluation) -> str:
    """The results as an aligned text table followed by the recommendation."""
    header = ("setting", f"recall@{evaluation.k}", "p50 ms", "p95 ms", "bytes/vec", "measured on")
    body = [
        (
            r.label + (" *" if r.recall >= evaluation.target else ""),
            f"{r.recall:.4f}",
            f"{r.p50_ms:.2f}",
            f"{r.p95_ms:.2f}",
            str(r.code_bytes),
            r.measured_on,
        )
        for r in evaluation.results
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    right = {1, 2, 3, 4}

    def fmt(row: Sequence[str]) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    lines = [fmt(header), fmt(["-" * w for w in widths]), *(fmt(row) for row in body)]
    lines += ["", f"* reaches recall@{evaluation.k} >= {evaluation.target:g}", "", evaluation.recommendation]
    lines += [f"note: {n}" for n in evaluation.notes]
    return "\n".join(lines)


def plot_evaluation(evaluation: Evaluation, path: str | Any) -> None:
    """Write a recall-vs-latency PNG of ``evaluation`` (one line per quantization).

    Needs matplotlib: ``pip install "langchain-vq[plot]"``.
    """
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        msg = 'Plotting needs matplotlib: pip install "langchain-vq[plot]" (or pip install matplotlib).'
        raise ImportError(msg) from exc
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for mode in dict.fromkeys(r.quantization for r in evaluation.results):
        rows = [r for r in evaluation.results if r.quantization == mode]
        rescored = [r for r in rows if r.rescore]
        (line,) = ax.plot(
            [r.p50_ms for r in rescored],
            [r.recall for r in rescored],
            marker="o",
            label=mode if mode != "none" else "exact float",
        )
        for r in rescored:
            if r.rescore_multiplier is not None:
                ax.annotate(
                    f"m={r.rescore_multiplier}",
                    (r.p50_ms, r.recall),
                    textcoords="offset points",
                    xytext=(4, -10),
                    fontsize=7,
                )
        for r in rows:
            if not r.rescore:
                ax.plot([r.p50_ms], [r.recall], marker="x", color=line.get_color(), linestyle="none")
                ax.annotate(
                    "codes only", (r.p50_ms, r.recall), textcoords="offset points", xytext=(4, 4), fontsize=7
                )
    ax.axhline(evaluation.target, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per single query (ms, log scale)")
    ax.set_ylabel(f"recall@{evaluation.k} vs exact search")
    ax.set_title(
        f"{evaluation.store_rows:,} rows, {evaluation.queries} {evaluation.query_source} queries",
        fontsize=10,
    )
    ax.grid(visible=True, which="both", alpha=0.3)
    ax.legend(title="quantization", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
