"""The document index: the catalog (source of truth: texts, vectors, manifest) on SQLite or
PostgreSQL, the vector stores derived from it (FAISS, Qdrant), and BM25 beside them."""
