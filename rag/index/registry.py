"""Catalogs (`catalog.backend`) and vector stores (`vector_store.backend`) by name, each imported only
when chosen: psycopg and qdrant-client load only for a config that names them."""
from __future__ import annotations

from pathlib import Path

from common.registry import backend
from rag.config import Config, VectorStoreConfig
from rag.index.catalog import CatalogStore
from rag.index.vectors import VectorStore

CATALOGS = {
    "sqlite": "rag.index.catalog:open_sqlite_catalog",
    "postgres": "rag.index.catalog_pg:open_postgres_catalog",
}
VECTOR_STORES = {
    "faiss": "rag.index.vectors:FaissStore",
    "qdrant": "rag.index.vectors_qdrant:QdrantStore",
}


def open_catalog(cfg: Config, folder: Path) -> CatalogStore:
    """The configured catalog: SQLite at <folder>/catalog.sqlite, or PostgreSQL at catalog.url / $url_env."""
    return backend(CATALOGS, "catalog.backend", cfg.catalog.backend)(cfg.catalog, Path(folder))


def open_vector_store(cfg: VectorStoreConfig, dimension: int, folder: Path, catalog_id: str = "") -> VectorStore:
    """`catalog_id` goes into a shared store's generation marker (Qdrant), so a marker left by another
    catalog (a wiped SQLite one that counts from 0 again) is never taken for this one's."""
    store = backend(VECTOR_STORES, "vector_store.backend", cfg.backend)
    return store(cfg, dimension, folder, catalog_id=catalog_id)
