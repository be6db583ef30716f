"""Dense search at scale: flat (exact) vs HNSW through rag/index/vectors.py's FaissStore.

Synthetic L2-normalised 384-d vectors (the embedder's dimension) at 10^3 .. 10^6 chunks (--quick:
10^3, 10^4), two kinds: uniformly random directions (the worst case for HNSW recall: no structure
to navigate) and a gaussian mixture of 1,000 topics (cosine ~0.6 to the topic centre, closer to
real text embeddings). Per size and index: build time (with the threads the store uses), single-query
latency p50/p95 at k=40 (what the retriever asks for) with faiss on 1 thread and on all cores, and
recall@10 against exact search. At the largest size efSearch is swept
on the built graph to show the recall/latency trade-off, and the flat index's cost per chunk gives
the size where exact search stops being cheap: the `vector_store.hnsw_min_chunks` question.
"""
from __future__ import annotations

import gc
import os
import time

import numpy as np

from bench.common import Context, Section, Table, load_now, pct, target, temp_dir

DIM = 384
K = 40                    # the retriever's dense candidates (retrieval.candidates)
TOPICS = 1000
TOPIC_NOISE = 0.07        # per-dimension std: cosine to the topic centre ~ 1/sqrt(1 + 384 * 0.07^2) = 0.6


def vectors(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    centres = None
    if kind == "clustered":
        centres = np.random.default_rng(12345).standard_normal((TOPICS, DIM)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        if centres is None:
            block = rng.standard_normal((m, DIM), dtype=np.float32)
        else:
            block = centres[rng.integers(0, TOPICS, m)] + TOPIC_NOISE * rng.standard_normal((m, DIM), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + m] = block
    return out


def make_store(kind: str):
    from rag.config import VectorStoreConfig
    from rag.index.vectors import FaissStore

    return FaissStore(VectorStoreConfig(index=kind), DIM, temp_dir("search"))


def timed_queries(store, queries: np.ndarray, k: int = K) -> tuple[list[float], np.ndarray]:
    lat, found = [], np.full((len(queries), 10), -1, dtype=np.int64)
    for i, q in enumerate(queries):
        t = time.perf_counter()
        ids, _ = store.search(q, k)
        lat.append((time.perf_counter() - t) * 1000)
        found[i, :min(10, len(ids))] = ids[:10]
    return lat, found


def recall_at_10(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)]))


def run(ctx: Context) -> Section:
    import faiss

    sizes = [1_000, 10_000] if ctx.quick else [1_000, 10_000, 100_000, 1_000_000]
    n_queries = 50 if ctx.quick else 300
    kinds = ["uniform", "clustered"]
    cores = os.cpu_count() or 1
    before = faiss.omp_get_max_threads()
    probe = make_store("hnsw")
    store_threads = faiss.omp_get_max_threads()          # what FaissStore sets for itself
    store_ef = faiss.downcast_index(probe.index.index).hnsw.efSearch
    del probe
    table = Table(f"Single-query dense search, k={K}: build with the store's {store_threads} thread(s); latency with "
                  f"faiss on 1 thread and on {cores} (faiss's default); recall@10 vs exact over {n_queries} queries; "
                  f"HNSW M 32, efConstruction 80, efSearch {store_ef}",
                  ["vectors", "chunks", "index", "build s", "p50 ms 1 thr", "p95 ms 1 thr",
                   f"p50 ms {cores} thr", f"p95 ms {cores} thr", "recall@10"])
    sweep = Table(f"efSearch sweep on the largest HNSW graph (efConstruction 80, M 32; the store uses {store_ef}), "
                  "1 thread", ["vectors", "chunks", "efSearch", "p50 ms", "p95 ms", "recall@10"])
    results: dict[tuple[str, int, str], dict] = {}
    try:
        for kind in kinds:
            queries = vectors(kind, n_queries, seed=7)
            for n in sizes:
                data = vectors(kind, n, seed=n)
                ids = np.arange(n, dtype=np.int64)
                exact = None
                for index in ("flat", "hnsw"):
                    store = make_store(index)   # sets its own thread count, as in the app
                    t = time.perf_counter()
                    store.rebuild(ids, data)
                    build = time.perf_counter() - t
                    lat: dict[int, list[float]] = {1: [], cores: []}
                    for threads in (1, cores, 1, cores):          # interleaved halves: same load for both
                        faiss.omp_set_num_threads(threads)
                        timed_queries(store, queries[:3])          # warm-up
                        half, found = timed_queries(store, queries)
                        lat[threads] += half
                    if exact is None:                              # flat first: it is the exact answer
                        exact = found
                    rec = recall_at_10(found, exact)
                    r = {"p50": pct(lat[1], 50), "p95": pct(lat[1], 95), "p50_all": pct(lat[cores], 50),
                         "p95_all": pct(lat[cores], 95), "recall": rec, "build": build}
                    results[(kind, n, index)] = r
                    table.add(kind, n, index, build, r["p50"], r["p95"], r["p50_all"], r["p95_all"], rec)
                    print(f"  {kind:<9} {n:>9,} {index:<4} build {build:7.1f} s  p50 {r['p50']:7.2f} ms (1 thr) "
                          f"{r['p50_all']:7.2f} ms ({cores} thr)  recall@10 {rec:.3f}  ({load_now()})", flush=True)
                    if index == "hnsw" and n == sizes[-1]:
                        faiss.omp_set_num_threads(1)
                        inner = faiss.downcast_index(store.index.index)
                        for ef in (16, 32, 64, 96, 128, 256, 512):
                            inner.hnsw.efSearch = ef
                            lat2, found2 = timed_queries(store, queries)
                            sweep.add(kind, n, ef, pct(lat2, 50), pct(lat2, 95), recall_at_10(found2, exact))
                        inner.hnsw.efSearch = store_ef
                    del store
                    gc.collect()
                del data
                gc.collect()
    finally:
        faiss.omp_set_num_threads(before)

    section = Section("search", "Search scale: flat vs HNSW", [table, sweep])
    biggest = sizes[-1]
    for kind in kinds:
        flat, hnsw = results[(kind, biggest, "flat")], results[(kind, biggest, "hnsw")]
        per_chunk_ms = flat["p50"] / biggest
        section.figures[f"{kind} flat ms per 10^5 chunks"] = per_chunk_ms * 1e5
        section.notes.append(
            f"{kind}: flat search (1 thread) costs {per_chunk_ms * 1e5:.1f} ms per 100,000 chunks (p50 at "
            f"{biggest:,}: {flat['p50']:.1f} ms), so exact search stays under 5 ms up to ~{5 / per_chunk_ms:,.0f} "
            f"chunks and under 20 ms up to ~{20 / per_chunk_ms:,.0f}; HNSW at {biggest:,}: p50 {hnsw['p50']:.2f} ms, "
            f"recall@10 {hnsw['recall']:.3f}, build {hnsw['build']:.0f} s ({hnsw['build'] / biggest * 1e6:.0f} s "
            f"per million).")
    slow = [(k, n, i) for (k, n, i), r in results.items() if r["p50_all"] > 1.5 * r["p50"] + 0.5]
    section.notes.append(
        f"faiss on {cores} OpenMP threads was slower than on 1 thread in {len(slow)} of {len(results)} single-query "
        f"cases here (a thread waits for a core busy with other work); the store uses {store_threads}.")
    if not ctx.quick:
        for kind in kinds:
            h = results[(kind, 1_000_000, "hnsw")]
            section.notes.append(target(f"p50 at 10^6 ({kind}, HNSW, 1 thread)", h["p50"], 20, False, " ms"))
            section.notes.append(target(f"p50 at 10^6 ({kind}, HNSW, {cores} threads)", h["p50_all"], 20, False, " ms",
                                        why="OpenMP threads waiting for a core taken by other processes"))
            efs = [row for row in sweep.rows if row[0] == kind and row[5] >= 0.95]
            if efs:
                section.notes.append(f"{kind}: efSearch {efs[0][2]} is the smallest swept value reaching recall@10 "
                                     f"0.95 at 10^6 (p50 {efs[0][3]:.2f} ms).")
            top = max((row for row in sweep.rows if row[0] == kind), key=lambda row: row[5])
            section.notes.append(target(f"recall@10 at 10^6 ({kind}, HNSW)", h["recall"], 0.95, True,
                                        why="uniformly random 384-d vectors have no neighbourhood structure for "
                                            "the graph to follow (all points are nearly equidistant); even efSearch "
                                            f"{top[2]} reaches only {top[5]:.3f}" if kind == "uniform" else ""))
        section.figures.update({f"hnsw 1e6 {k}": results[(k, 1_000_000, "hnsw")] for k in kinds})
        section.figures.update({f"flat 1e5 {k}": results[(k, 100_000, "flat")] for k in kinds})
    return section
