"""Checks of user input at the API boundary, in one place.

Each raises :class:`~langchain_vq.errors.InvalidInputError` (an unknown component name:
:class:`~langchain_vq.errors.ConfigurationError`; the rule is in ``errors.py``), saying what was
found, what was expected and how to fix it. Used by every layer (store, collection, quantizers,
loaders, embeddings, calibration, command line), so one kind of mistake gets one message everywhere.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from langchain_vq.errors import ConfigurationError, InvalidInputError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


def check_int(
    value: object, name: str, *, minimum: int = 1, maximum: int | None = None, fix: str = ""
) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``; bools, floats and strings are refused.

    Args:
        value: What the caller passed.
        name: The argument's name, for the message.
        minimum: Smallest value allowed (1: a positive integer, 0: a non-negative one).
        maximum: Largest value allowed, or None.
        fix: A sentence appended to the message saying how to fix it.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        if maximum is not None:
            expected = f"an integer in [{minimum}, {maximum}]"
        else:
            expected = {1: "a positive integer", 0: "a non-negative integer"}.get(
                minimum, f"an integer >= {minimum}"
            )
        msg = f"{name} must be {expected}, got {value!r}." + (f" {fix}" if fix else "")
        raise InvalidInputError(msg)
    return int(value)


def check_k(k: object, name: str = "k") -> int:
    """A positive integer count of results."""
    return check_int(k, name, fix="Ask for at least one result.")


def check_multiplier(value: object) -> int:
    """A rescore multiplier: an integer >= 1 (candidates are ``k * rescore_multiplier``)."""
    return check_int(value, "rescore_multiplier", fix="Use 1 to rescore only k candidates.")


def check_fraction(value: object, name: str, *, example: str = "0.99") -> float:
    """A number in ``(0, 1]`` (a recall target), as a float."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.floating))
        or math.isnan(value)
        or not 0.0 < float(value) <= 1.0
    ):
        msg = f"{name} must be a number in (0, 1], got {value!r} (e.g. {example})."
        raise InvalidInputError(msg)
    return float(value)


def check_share(value: object, name: str, *, below: float, example: str) -> float:
    """A number in ``[0, below)`` (a share of values, such as a quantile to clip), as a float."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.floating))
        or math.isnan(value)
        or not 0.0 <= float(value) < below
    ):
        msg = f"{name} must be a number in [0, {below}), got {value!r} (e.g. {example})."
        raise InvalidInputError(msg)
    return float(value)


def canonical_name(spec: object, aliases: Mapping[str, str | None], what: str, valid: str) -> str | None:
    """The canonical name of a user-facing spec (case and spaces ignored); ``None`` stays ``None``.

    An unknown name is a :class:`ConfigurationError` listing ``valid``.
    """
    if spec is None:
        return None
    key = spec.strip().lower() if isinstance(spec, str) else None
    if key is None or key not in aliases:
        msg = f"Unknown {what} {spec!r}; expected one of {valid}."
        raise ConfigurationError(msg)
    return aliases[key]


def check_flag(value: object, name: str) -> bool:
    """``True`` or ``False`` exactly (``1`` or ``"yes"`` are refused)."""
    if not isinstance(value, bool):
        msg = f"{name} must be True or False, got {value!r}."
        raise InvalidInputError(msg)
    return value


def _check_unicode(text: str, where: str, fix: str) -> None:
    """Refuse strings with lone surrogates, which cannot be stored as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        msg = f"{where} is not valid Unicode ({exc.reason} at {exc.start}); {fix}."
        raise InvalidInputError(msg) from exc


def check_texts(texts: Iterable[str]) -> list[str]:
    """Texts as a list of valid Unicode strings."""
    if isinstance(texts, str):
        msg = "texts must be a list of strings, got a single string; wrap it in a list."
        raise InvalidInputError(msg)
    out = list(texts)
    for pos, text in enumerate(out):
        if not isinstance(text, str):
            msg = f"texts[{pos}] is {type(text).__name__}, expected str."
            raise InvalidInputError(msg)
        _check_unicode(text, f"texts[{pos}]", "clean the text first")
    return out


def check_id(value: object, pos: int) -> str | None:
    """A caller-given id: a non-empty str, or None (generate one)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        msg = (
            f"ids[{pos}] is {value!r} ({type(value).__name__}); "
            "expected a non-empty str (or None to generate one)."
        )
        raise InvalidInputError(msg)
    _check_unicode(value, f"ids[{pos}]", "use a UTF-8 encodable id")
    return value
