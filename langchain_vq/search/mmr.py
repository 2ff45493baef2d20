"""Maximal marginal relevance: pick results that are relevant and unlike each other."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt


def _unit(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(norms == 0, 1, norms)).astype(np.float32)


def maximal_marginal_relevance(
    query: npt.NDArray[np.float32],
    candidates: npt.NDArray[np.float32],
    k: int,
    lambda_mult: float,
) -> list[int]:
    """Indices into ``candidates`` chosen greedily by ``lambda * sim(q) - (1 - lambda) * max sim(chosen)``.

    Similarities are cosine, as in LangChain's own MMR. ``lambda_mult`` 1 is pure relevance,
    0 pure diversity.
    """
    n = candidates.shape[0]
    if n == 0 or k <= 0:
        return []
    unit = _unit(candidates.astype(np.float32, copy=False))
    relevance = unit @ _unit(query.reshape(-1))  # [n]
    chosen = [int(np.argmax(relevance))]
    redundancy = unit @ unit[chosen[0]]  # [n] max similarity to any chosen row
    available = np.ones(n, dtype=bool)
    available[chosen[0]] = False
    while len(chosen) < min(k, n):
        gain = lambda_mult * relevance - (1 - lambda_mult) * redundancy
        gain[~available] = -np.inf
        pick = int(np.argmax(gain))
        chosen.append(pick)
        available[pick] = False
        redundancy = np.maximum(redundancy, unit @ unit[pick])
    return chosen
