"""Qdrant vector store: a server (`vector_store.qdrant_url`) or the client's embedded local mode
(a folder under the data dir) for tests and small setups.

Like FAISS it is derived from the catalog, which holds every vector: switching a data dir from
FAISS to Qdrant copies the catalog's vectors into Qdrant on first open, without re-embedding.
Local mode locks its folder, so only one process may open it at a time; use a server for several.

The catalog generation the points reflect is kept in Qdrant itself (one point in a side collection,
`<collection>-generation`, with the catalog's id), not in a local file: replicas sharing a server and
a PostgreSQL catalog all read the same marker, so none thinks the store stale forever or rebuilds it
at every start, and a wiped server has no marker left to trust.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from rag.config import VectorStoreConfig
from common.errors import BackendError
from rag.index.vectors import VectorStore

log = logging.getLogger(__name__)
BATCH = 512


class QdrantStore(VectorStore):
    live = True

    def __init__(self, cfg: VectorStoreConfig, dimension: int, folder: Path, catalog_id: str = ""):
        try:
            from qdrant_client import QdrantClient, models
        except ImportError as err:
            raise BackendError("qdrant-client is not installed; run: pip install qdrant-client") from err
        self.models = models
        self.dimension = dimension
        self.collection = cfg.qdrant_collection
        self.marker = f"{self.collection}-generation"
        self.catalog_id = catalog_id
        self.shared = bool(cfg.qdrant_url)   # other replicas write the same points: rebuild only under the lock
        try:
            if cfg.qdrant_url:
                self.client = QdrantClient(url=cfg.qdrant_url, api_key=os.environ.get(cfg.qdrant_api_key_env),
                                           timeout=30)
            else:
                self.client = QdrantClient(path=str(folder / "qdrant"))
            if not self.client.collection_exists(self.collection):
                self._create()
        except RuntimeError as err:   # local mode: "Storage folder ... is already accessed by another instance"
            raise BackendError(f"cannot open the Qdrant store: {' '.join(str(err).split())[:200]}") from err
        except Exception as err:  # noqa: BLE001 - connection errors come in many types
            if isinstance(err, BackendError):
                raise
            raise BackendError(f"cannot reach Qdrant at {cfg.qdrant_url}: {type(err).__name__}") from err

    def _create(self) -> None:
        self.client.create_collection(
            self.collection, vectors_config=self.models.VectorParams(size=self.dimension,
                                                                     distance=self.models.Distance.COSINE))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        for start in range(0, len(ids), BATCH):
            part = slice(start, start + BATCH)
            self.client.upsert(self.collection, points=self.models.Batch(
                ids=[int(i) for i in ids[part]], vectors=np.asarray(vectors[part], dtype=np.float32).tolist()))

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.client.delete(self.collection,
                               points_selector=self.models.PointIdsList(points=[int(i) for i in ids]))

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """In place: upsert every catalog point, then delete the points the catalog no longer has. Replicas
        sharing the collection keep searching it meanwhile (a stale id they get is dropped when the
        catalog has no text for it); deleting and recreating it would fail their searches until refilled."""
        if not self._collection_fits():
            if self.client.collection_exists(self.collection):
                log.info("Qdrant collection %s has another vector size or distance: recreating it", self.collection)
                self.client.delete_collection(self.collection)
            self._create()
        self.add(ids, vectors)
        keep = {int(i) for i in ids}
        leftovers: list[int] = []
        offset = None
        while True:
            points, offset = self.client.scroll(self.collection, limit=4 * BATCH, offset=offset,
                                                with_payload=False, with_vectors=False)
            leftovers.extend(int(p.id) for p in points if int(p.id) not in keep)
            if offset is None:
                break
        for start in range(0, len(leftovers), BATCH):
            self.remove(np.array(leftovers[start:start + BATCH], dtype=np.int64))
        if leftovers:
            log.info("removed %d points the catalog no longer has from Qdrant", len(leftovers))

    def _collection_fits(self) -> bool:
        """The collection exists with one unnamed vector of this store's size and cosine distance."""
        if not self.client.collection_exists(self.collection):
            return False
        params = self.client.get_collection(self.collection).config.params.vectors
        return (isinstance(params, self.models.VectorParams) and params.size == self.dimension
                and params.distance == self.models.Distance.COSINE)

    def search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if allowed is not None and not len(allowed):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        # Chunks are shared between documents (dedup by text), so the catalog resolves a filter to chunk
        # ids and Qdrant filters by id rather than by a per-point source payload.
        query_filter = None if allowed is None else self.models.Filter(
            must=[self.models.HasIdCondition(has_id=[int(i) for i in allowed])])
        points = self.client.query_points(self.collection, query=np.asarray(vector, np.float32).ravel().tolist(),
                                          query_filter=query_filter, limit=k).points
        return (np.array([int(p.id) for p in points], dtype=np.int64),
                np.array([p.score for p in points], dtype=np.float32))

    def __len__(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def save(self, generation: int) -> None:
        # Qdrant persists the points itself; only the generation they reflect is recorded here.
        models = self.models
        if not self.client.collection_exists(self.marker):
            self.client.create_collection(self.marker, vectors_config=models.VectorParams(
                size=1, distance=models.Distance.DOT))
        self.client.upsert(self.marker, points=[models.PointStruct(
            id=0, vector=[1.0], payload={"generation": int(generation), "catalog": self.catalog_id})])

    def saved_generation(self) -> int | None:
        if not self.client.collection_exists(self.marker):
            return None
        points = self.client.retrieve(self.marker, ids=[0], with_payload=True, with_vectors=False)
        payload = (points[0].payload or {}) if points else {}
        if payload.get("catalog") != self.catalog_id or not isinstance(payload.get("generation"), int):
            return None     # another catalog's marker (or none): the points cannot be trusted
        return payload["generation"]
