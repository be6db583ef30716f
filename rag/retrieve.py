"""Hybrid retrieval: dense (FAISS) and lexical (BM25) ranked lists fused by reciprocal rank.

Several queries can be fused at once, which is how follow-ups work even when the small model
rewrites them badly: the rewritten question and a history-aware query (the question with the
recent user turns) each contribute their ranked lists.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rag.config import RetrievalConfig
from rag.events import Hit
from rag.index.document_index import DocumentIndex


@dataclass(frozen=True)
class Query:
    text: str
    weight: float = 1.0
    lexical: bool = True


class Retriever:
    def __init__(self, index: DocumentIndex, cfg: RetrievalConfig):
        self.index = index
        self.cfg = cfg

    def search(self, queries: list[Query], k: int | None = None, sources: Sequence[str] = ()) -> list[Hit]:
        """`sources`: only search documents whose source matches one of these patterns (globs,
        exact sources or folder prefixes; see rag.index.document_index.source_matches)."""
        k = k or self.cfg.k
        self.index.refresh()       # pick up another process's ingest
        allowed = self.index.chunks_of_sources(sources) if sources else None
        queries = [q for q in queries if q.text.strip()]
        if not queries:
            return []
        vectors = self.index.embedder.embed([q.text for q in queries])
        fused: dict[int, float] = {}
        best_dense: dict[int, float] = {}
        for query, vector in zip(queries, vectors):
            dense = self.index.dense(vector, self.cfg.candidates, allowed)
            for hit in dense:
                best_dense[hit.chunk_id] = max(best_dense.get(hit.chunk_id, -1.0), hit.score)
            lists = [(dense, self.cfg.dense_weight)]
            if self.cfg.lexical and query.lexical:
                lists.append((self.index.lexical_search(query.text, self.cfg.candidates, allowed),
                              1.0 - self.cfg.dense_weight))
            for ranked, weight in lists:
                for chunk_id, score in self._list_scores(ranked, query.weight, weight):
                    fused[chunk_id] = fused.get(chunk_id, 0.0) + score
        top = sorted(fused, key=fused.__getitem__, reverse=True)[:k]
        refs = self.index.refs(top)
        return [Hit(chunk_id=str(cid), text=refs[cid].text, source=refs[cid].source, location=refs[cid].location,
                    score=fused[cid], dense_score=best_dense.get(cid, 0.0))
                for cid in top if cid in refs]

    def _list_scores(self, ranked: Sequence, query_weight: float, list_weight: float) -> list[tuple[int, float]]:
        """What one ranked list adds to each of its passages. Relative: its scores scaled to 0..1 within
        the list (the best 1, the last candidate 0), times the list's weight. A dense cosine of 0.77
        against 0.51 then keeps its lead: under rrf, "Can I bring my dog to Harbor Desk?" lost the
        dogs passage (dense first by far, BM25 fourth) to two passages that were second in both lists,
        and the model, which reads the best two, answered with the opening hours (seen as a new user)."""
        if self.cfg.fusion == "rrf":
            return [(hit.chunk_id, query_weight / (self.cfg.rrf_k + rank + 1)) for rank, hit in enumerate(ranked)]
        if not ranked:
            return []
        scores = [hit.score for hit in ranked]
        low, span = min(scores), max(scores) - min(scores)
        return [(hit.chunk_id, query_weight * list_weight * ((hit.score - low) / span if span > 0 else 1.0))
                for hit in ranked]

    def best_dense_score(self, text: str) -> float:
        hits = self.index.dense(self.index.embedder.embed_query(text), 1)
        return hits[0].score if hits else -1.0
