"""Checks of user input at the API boundary.

Each raises a typed error saying what was found, what was expected and how to fix it. Shared by
the store and the embeddings.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from langchain_vq.errors import ConfigurationError, InvalidInputError

if TYPE_CHECKING:
    from collections.abc import Iterable


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
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            msg = f"texts[{pos}] is not valid Unicode ({exc.reason} at {exc.start}); clean the text first."
            raise InvalidInputError(msg) from exc
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
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        msg = f"ids[{pos}] is not valid Unicode ({exc.reason} at {exc.start}); use a UTF-8 encodable id."
        raise InvalidInputError(msg) from exc
    return value


def metadata_json(metadata: object, pos: int) -> str:
    """A metadata dict as JSON text (None is an empty dict)."""
    if metadata is None:
        return "{}"
    if not isinstance(metadata, dict):
        msg = f"metadatas[{pos}] is {type(metadata).__name__}, expected a dict."
        raise InvalidInputError(msg)
    try:
        text = json.dumps(metadata, ensure_ascii=False, allow_nan=False, sort_keys=False)
        bad_key = _non_str_key(metadata)
        if bad_key is not None:  # json.dumps would silently turn 1 into "1"
            msg = f"key {bad_key!r} ({type(bad_key).__name__}) is not a str"
            raise TypeError(msg)  # noqa: TRY301 - reported below like json's own errors
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        msg = (
            f"metadatas[{pos}] is not JSON-serializable ({reason}); expected str, int, float, bool, "
            "None, lists and dicts with str keys, valid Unicode. Convert other values (dates, "
            "arrays) first."
        )
        raise InvalidInputError(msg) from exc
    return text


def _non_str_key(value: object) -> object | None:
    """The first dict key anywhere in ``value`` that is not a str (iterative: no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    return key
                stack.append(child)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return None


def check_k(k: object, name: str = "k") -> int:
    """A positive integer count of results."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        msg = f"{name} must be a positive integer, got {k!r}."
        raise InvalidInputError(msg)
    return int(k)


def check_multiplier(value: object) -> int:
    """A rescore multiplier: an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        msg = f"rescore_multiplier must be an integer >= 1, got {value!r}."
        raise ConfigurationError(msg)
    return int(value)
