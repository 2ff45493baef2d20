"""``VQRetriever``: a retriever whose search knobs are typed fields.

Typed fields (rather than a free-form ``search_kwargs`` dict) let a chain expose them with
``configurable_fields`` and set them per call with ``with_config``::

    retriever = store.as_retriever(k=4).configurable_fields(
        k=ConfigurableField(id="k"), filter=ConfigurableField(id="filter")
    )
    chain.invoke(question, config={"configurable": {"k": 8, "filter": {"lang": "en"}}})
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from langchain_core.vectorstores import VectorStoreRetriever
from pydantic import Field, model_validator
from typing_extensions import override

from langchain_vq.errors import InvalidInputError

if TYPE_CHECKING:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document

SearchType = Literal["similarity", "similarity_score_threshold", "mmr"]
#: Field names that ``as_retriever(search_kwargs=...)`` maps onto typed fields.
KNOBS = ("k", "filter", "rescore_multiplier", "score_threshold", "fetch_k", "lambda_mult")


class VQRetriever(VectorStoreRetriever):
    """Retrieves documents from a ``VQVectorStore`` with typed, configurable search knobs."""

    k: int = Field(default=4, gt=0)
    """Documents to return."""
    filter: Any = None
    """Metadata filter (dict language or ``callable(Document) -> bool``), applied before the scan."""
    rescore_multiplier: int | None = Field(default=None, ge=1)
    """Code-scan candidates per result; None uses the store's default."""
    search_type: SearchType = "similarity"
    """``similarity``, ``similarity_score_threshold`` or ``mmr``."""
    score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Minimum relevance score in [0, 1] for ``similarity_score_threshold``."""
    fetch_k: int = Field(default=20, gt=0)
    """Candidates MMR chooses from."""
    lambda_mult: float = Field(default=0.5, ge=0.0, le=1.0)
    """MMR trade-off: 1 is relevance only, 0 diversity only."""

    @model_validator(mode="before")
    @classmethod
    @override
    def validate_search_type(cls, values: dict[str, Any]) -> Any:
        """Move known ``search_kwargs`` onto the typed fields."""
        if isinstance(values, dict):
            values = dict(values)
            search_kwargs = dict(values.get("search_kwargs") or {})
            for knob in KNOBS:
                if knob in search_kwargs:
                    values.setdefault(knob, search_kwargs.pop(knob))
            values["search_kwargs"] = search_kwargs
        return values

    @model_validator(mode="after")
    def _threshold_given(self) -> VQRetriever:
        if self.search_type == "similarity_score_threshold" and self.score_threshold is None:
            msg = (
                "search_type='similarity_score_threshold' needs score_threshold (a float in "
                "[0, 1]); pass score_threshold=0.5 or use search_type='similarity'."
            )
            raise InvalidInputError(msg)
        return self

    def _params(self, overrides: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        params: dict[str, Any] = {knob: getattr(self, knob) for knob in KNOBS}
        params.update(self.search_kwargs)
        params.update(overrides)
        search_type = params.pop("search_type", self.search_type)
        threshold = params.pop("score_threshold")
        fetch_k, lambda_mult = params.pop("fetch_k"), params.pop("lambda_mult")
        if params.get("rescore_multiplier") is None:
            params.pop("rescore_multiplier", None)
        if search_type == "mmr":
            params.update(fetch_k=fetch_k, lambda_mult=lambda_mult)
        elif search_type == "similarity_score_threshold":
            params["score_threshold"] = threshold
        return search_type, params

    @override
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        search_type, params = self._params(kwargs)
        store = self.vectorstore
        if search_type == "mmr":
            return store.max_marginal_relevance_search(query, **params)
        if search_type == "similarity_score_threshold":
            return [doc for doc, _ in store.similarity_search_with_relevance_scores(query, **params)]
        return store.similarity_search(query, **params)

    @override
    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        search_type, params = self._params(kwargs)
        store = self.vectorstore
        if search_type == "mmr":
            return await store.amax_marginal_relevance_search(query, **params)
        if search_type == "similarity_score_threshold":
            pairs = await store.asimilarity_search_with_relevance_scores(query, **params)
            return [doc for doc, _ in pairs]
        return await store.asimilarity_search(query, **params)
