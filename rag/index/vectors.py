"""Vector store interface and the FAISS backend.

The SQLite catalog (rag/index/catalog.py) holds every chunk's vector and is the source of truth; the
vector store is a search structure derived from it, saved atomically with the catalog generation
it reflects, and rebuilt from the catalog whenever the two disagree (e.g. after a crash).
"""
from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from common.files import atomic_write

from rag.config import VectorStoreConfig

log = logging.getLogger(__name__)

EXACT_FILTER_MAX = 50_000   # filtered HNSW searches at most this many chunks exactly


class VectorStore(ABC):
    live = False   # True when writes by other processes are visible without reopening (a server)
    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    @abstractmethod
    def remove(self, ids: np.ndarray) -> None: ...

    @abstractmethod
    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace everything with exactly these vectors (from the catalog)."""

    def needs_rebuild(self) -> bool:
        return False

    @abstractmethod
    def search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, cosine scores), best first; ids are catalog chunk ids. `allowed` (chunk ids) restricts
        the search to those chunks: a metadata filter resolved by the catalog."""

    @abstractmethod
    def __len__(self) -> int: ...

    def save(self, generation: int) -> None:
        """Persist (if the backend keeps its own files) as reflecting catalog `generation`."""

    def saved_generation(self) -> int | None:
        return None


class FaissStore(VectorStore):
    """Exact inner-product search (flat) or HNSW, picked by size when `index: auto`.

    HNSW cannot delete in place, so removals there are dropped from results by id and the graph
    is rebuilt from the catalog once a tenth of it is stale.
    """

    def __init__(self, cfg: VectorStoreConfig, dimension: int, folder: Path, catalog_id: str = ""):
        # `catalog_id` is unused: the FAISS file lives beside its catalog's generation (QdrantStore needs it)
        import faiss

        self.faiss = faiss
        # One query at a time is searched in well under a millisecond to tens of ms; a second OpenMP
        # thread only waits for a busy core (slower in 13 of 16 cases measured, bench/RESULTS.md).
        faiss.omp_set_num_threads(1)
        self.cfg = cfg
        self.dimension = dimension
        self.path = folder / "vectors.faiss"
        self.generation_path = folder / "vectors.generation"
        self.index = self._new_index(0)
        self.stale: set[int] = set()
        if self.path.exists():
            try:
                self.index = faiss.read_index(str(self.path))
            except RuntimeError as err:   # a truncated file: the catalog rebuilds it
                log.warning("vector file %s unreadable (%s); it will be rebuilt", self.path, err)
                self.path.unlink()

    def kind_for(self, n: int) -> str:
        if self.cfg.index != "auto":
            return self.cfg.index
        return "hnsw" if n >= self.cfg.hnsw_min_chunks else "flat"

    def _new_index(self, n: int):
        faiss = self.faiss
        if self.kind_for(n) == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dimension, 32, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = 80
            inner.hnsw.efSearch = 128   # recall@10 0.95 at 10^6 clustered vectors, p50 0.33 ms
        else:
            inner = faiss.IndexFlatIP(self.dimension)
        return faiss.IndexIDMap2(inner)

    @property
    def is_hnsw(self) -> bool:
        return isinstance(self.faiss.downcast_index(self.index.index), self.faiss.IndexHNSWFlat)

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index = self._new_index(len(ids))
        self.stale.clear()
        if len(ids):
            # Building (HNSW above all) is bulk work: all cores, then back to one for single queries.
            self.faiss.omp_set_num_threads(os.cpu_count() or 1)
            try:
                self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
            finally:
                self.faiss.omp_set_num_threads(1)

    def needs_rebuild(self) -> bool:
        n = self.index.ntotal
        wrong_kind = (self.kind_for(n) == "hnsw") != self.is_hnsw
        return wrong_kind or (bool(self.stale) and len(self.stale) > 0.1 * max(n, 1))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.stale.difference_update(int(i) for i in ids)
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))

    def remove(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        if self.is_hnsw:
            self.stale.update(int(i) for i in ids)
        else:
            self.index.remove_ids(ids.astype(np.int64))

    def search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.index.ntotal == 0 or (allowed is not None and not len(allowed)):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        query = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
        if allowed is not None and self.is_hnsw and len(allowed) <= EXACT_FILTER_MAX:
            return self._exact_among(query, k, allowed)
        want = min(k + len(self.stale), self.index.ntotal)
        params = None
        if allowed is not None:
            selector = self.faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            # A big filter on HNSW walks the graph skipping excluded nodes; a wider beam keeps recall up.
            params = (self.faiss.SearchParametersHNSW(sel=selector, efSearch=4 * 128) if self.is_hnsw
                      else self.faiss.SearchParameters(sel=selector))
        scores, ids = self.index.search(query, want, params=params)
        keep = [(i, s) for i, s in zip(ids[0], scores[0]) if i >= 0 and int(i) not in self.stale][:k]
        return (np.array([i for i, _ in keep], dtype=np.int64), np.array([s for _, s in keep], dtype=np.float32))

    def _exact_among(self, query: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over the allowed chunks: HNSW filtered by a small set loses its graph's paths
        (a selector of 3 ids among 1,000 returned 2), and scoring a few thousand vectors is sub-millisecond."""
        present = self.faiss.vector_to_array(self.index.id_map)
        ids = np.asarray(allowed, dtype=np.int64)
        ids = ids[np.isin(ids, present) & ~np.isin(ids, np.fromiter(self.stale, dtype=np.int64, count=len(self.stale)))]
        if not len(ids):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores = self.index.reconstruct_batch(ids) @ query[0]
        order = np.argsort(-scores)[:k]
        return ids[order], scores[order].astype(np.float32)

    def __len__(self) -> int:
        return int(self.index.ntotal) - len(self.stale)

    def save(self, generation: int) -> None:
        data = self.faiss.serialize_index(self.index).tobytes()
        atomic_write(self.path, data)
        # Written after the vectors: a crash in between leaves an old number, which only costs a rebuild.
        atomic_write(self.generation_path, str(generation).encode())

    def saved_generation(self) -> int | None:
        try:
            return int(self.generation_path.read_text()) if self.path.exists() else None
        except (OSError, ValueError):
            return None
