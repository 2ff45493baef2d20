"""Translate LangChain structured queries (``SelfQueryRetriever``) into this store's filter dicts.

``SelfQueryRetriever`` asks an LLM for a query and a filter such as
``and(eq("genre", "drama"), gt("year", 2000))``, parses it into ``langchain_core.structured_query``
objects, and hands them to a translator. ``VQTranslator`` produces the dict language of
``langchain_vq.filters``:

==========================  ======================================  ==================================
langchain-core              filter dict                             notes
==========================  ======================================  ==================================
``Comparator.EQ``           ``{attr: {"$eq": v}}``                  same JSON type only (1 != "1")
``Comparator.NE``           ``{attr: {"$ne": v}}``                  rows without ``attr`` do not match
``Comparator.GT/GTE``       ``{attr: {"$gt"/"$gte": v}}``           numbers or strings, not booleans
``Comparator.LT/LTE``       ``{attr: {"$lt"/"$lte": v}}``           strings order lexicographically
``Comparator.IN``           ``{attr: {"$in": [v, ...]}}``           a single value becomes ``[v]``
``Comparator.NIN``          ``{attr: {"$nin": [v, ...]}}``          rows without ``attr`` do not match
``Comparator.CONTAIN``      ``{attr: {"$contains": v}}``            list membership, not substring
``Comparator.LIKE``         none: ``InvalidFilterError``            no pattern or substring matching
``Operator.AND``            ``{"$and": [f, ...]}``
``Operator.OR``             ``{"$or": [f, ...]}``
``Operator.NOT``            ``{"$not": f}``                         matches rows without the field too;
                                                                    several arguments: none may match,
                                                                    ``{"$not": {"$or": [f, ...]}}``
(no comparator)             ``{attr: {"$exists": bool}}``           reachable only by a hand-written filter
==========================  ======================================  ==================================

``LIKE`` is left out of ``allowed_comparators``, so ``SelfQueryRetriever.from_llm`` does not offer
it to the LLM; a ``LIKE`` comparison built by hand raises ``InvalidFilterError``.

``CONTAIN`` is the store's ``$contains``: it matches documents whose list-valued field holds the
value (``tags: ["ml", "nlp"]`` contains ``"ml"``). It does not test substrings of a string field,
which other stores (Elasticsearch's ``match``) do; describe such fields to the LLM as lists.

Dates: the query constructor turns ``date("2024-01-01")`` into ``{"date": "2024-01-01", "type":
"date"}`` (and ``datetime`` likewise). The translator makes them a Python ``date`` (or
``datetime``), which the store compares with the dates and datetimes it keeps in typed columns
(format 2): store dates as ``date`` objects, not ISO strings, for such filters to match. A
string that is not ISO-8601 is an ``InvalidFilterError``.

Attributes are metadata keys; a dotted attribute (``"meta.score"``) reaches into nested dicts.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from langchain_core.structured_query import (
    Comparator,
    Comparison,
    Operation,
    Operator,
    StructuredQuery,
    Visitor,
)

from langchain_vq.errors import InvalidFilterError
from langchain_vq.filters import compile_filter

if TYPE_CHECKING:
    from collections.abc import Sequence

_COMPARATORS: dict[Comparator, str] = {
    Comparator.EQ: "$eq",
    Comparator.NE: "$ne",
    Comparator.GT: "$gt",
    Comparator.GTE: "$gte",
    Comparator.LT: "$lt",
    Comparator.LTE: "$lte",
    Comparator.IN: "$in",
    Comparator.NIN: "$nin",
    Comparator.CONTAIN: "$contains",
}
_OPERATORS: dict[Operator, str] = {Operator.AND: "$and", Operator.OR: "$or", Operator.NOT: "$not"}
_LIST_COMPARATORS = frozenset({Comparator.IN, Comparator.NIN})
#: Why a comparator has no equivalent, and what to use instead.
_NO_EQUIVALENT: dict[Comparator, str] = {
    Comparator.LIKE: (
        "the store's filter language has no pattern or substring matching on metadata; "
        "use eq or in for exact values, contain for membership in a list-valued field, "
        "or leave the text to the semantic query"
    ),
}


class VQTranslator(Visitor):
    """Turn a ``StructuredQuery`` into ``(query, {"filter": dict})`` for ``VQVectorStore``.

    Pass it to ``SelfQueryRetriever.from_llm(..., structured_query_translator=VQTranslator())``:
    LangChain has no built-in translator for this store. The mapping, and what has no
    equivalent, is in this module's docstring.
    """

    allowed_comparators: Sequence[Comparator] | None = tuple(_COMPARATORS)
    """Comparators offered to the LLM: all of langchain-core's except ``LIKE``."""

    allowed_operators: Sequence[Operator] | None = tuple(_OPERATORS)
    """Operators offered to the LLM: ``AND``, ``OR`` and ``NOT``."""

    def visit_operation(self, operation: Operation) -> dict[str, Any]:
        """Translate ``and``/``or``/``not`` over translated arguments.

        Raises:
            InvalidFilterError: the operation has no arguments.
        """
        op = operation.operator
        if not operation.arguments:
            msg = f"{op.value}() has no arguments; expected one or more comparisons or operations."
            raise InvalidFilterError(msg, op.value)
        args = [arg.accept(self) for arg in operation.arguments]
        if op == Operator.NOT:
            return {"$not": args[0] if len(args) == 1 else {"$or": args}}
        return {_OPERATORS[op]: args}

    def visit_comparison(self, comparison: Comparison) -> dict[str, Any]:
        """Translate one comparison into ``{attribute: {"$op": value}}``, checked by the store.

        Raises:
            InvalidFilterError: the comparator has no equivalent (``LIKE``), or the value or
                attribute is one the store's filter language refuses.
        """
        comparator = comparison.comparator
        call = f"{comparator.value}({comparison.attribute!r}, {comparison.value!r:.80})"
        if comparator not in _COMPARATORS:
            reason = _NO_EQUIVALENT.get(comparator, "the store's filter language has no equivalent")
            msg = f"{call}: comparator {comparator.value!r} is not supported: {reason}."
            raise InvalidFilterError(msg, comparator.value)
        where = comparison.attribute
        value = _value(comparison.value, call, where)
        if comparator in _LIST_COMPARATORS:
            value = [_value(v, call, where) for v in value] if isinstance(value, list) else [value]
        elif isinstance(value, list):
            hint = "use in for any of several values" if comparator == Comparator.EQ else "pass one value"
            msg = f"{call}: {comparator.value} takes one value, got a list; {hint}."
            raise InvalidFilterError(msg, where)
        result = {comparison.attribute: {_COMPARATORS[comparator]: value}}
        try:
            compile_filter(result)
        except InvalidFilterError as exc:
            msg = f"{call}: {exc}"
            raise InvalidFilterError(msg, exc.where) from exc
        return result

    def visit_structured_query(self, structured_query: StructuredQuery) -> tuple[str, dict[str, Any]]:
        """Return the query text and the search keyword arguments (``filter`` when there is one)."""
        if structured_query.filter is None:
            return structured_query.query, {}
        return structured_query.query, {"filter": structured_query.filter.accept(self)}


def _value(value: object, call: str, where: str) -> Any:
    """A comparison value as the store sees it: the query constructor's dates become dates."""
    if isinstance(value, dict):
        kind = value.get("type")
        text = value.get(kind) if isinstance(kind, str) else None
        if kind in ("date", "datetime") and isinstance(text, str):
            parse = dt.date.fromisoformat if kind == "date" else dt.datetime.fromisoformat
            try:
                return parse(text)
            except ValueError as exc:
                msg = f"{call}: {text!r} is not an ISO-8601 {kind} (expected e.g. '2024-01-31')."
                raise InvalidFilterError(msg, where) from exc
        msg = (
            f"{call}: expected a string, number, boolean, list or a date "
            f"({{'date': 'YYYY-MM-DD', 'type': 'date'}}), got the dict {value!r:.80}."
        )
        raise InvalidFilterError(msg, where)
    if isinstance(value, tuple):
        return list(value)
    return value
