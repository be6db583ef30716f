"""LLM generation speed per backend: time to first token and decode tokens/s at 300 / 1,200 / 3,000
prompt tokens (n_ctx 4096), through the app's own ChatModel.stream.

Backends: llamacpp (default), transformers (rag/models/llm_hf.py: the same GGUF as a float32 copy) and openai
(a llama_cpp.server started on loopback for the run). Each prompt is the app's answer prompt
(rag/answer/prompt.py) filled with SQuAD text up to the target length, and asks for a long summary so the
model writes `max_new_tokens`. Every repetition uses different text: llama.cpp reuses the KV cache
of a repeated prefix, which would hide the prompt cost. The backends run in turns, repetition by
repetition, so load changes hit all of them alike. Tokens are counted with the model's tokenizer.

For a CUDA run, tokens/s is also given as a fraction of the memory-bandwidth ceiling (every weight is
read once per generated token): see `bandwidth_fraction`.
--quick: 300 tokens only, 8 new tokens, one repetition, default threads only.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.common import Context, Section, Table, data_dir, engines, forget, free_port, load_now, squad

LENGTHS = (300, 1200, 3000)
QUESTION = "Summarize everything the sources say, in detail, point by point."

# Peak memory bandwidth in GB/s by card name, for when the driver does not report clock and bus width.
GPU_BANDWIDTH_GBS = {
    "H200": 4800, "H100 NVL": 3900, "H100 PCIe": 2000, "H100": 3350, "GH200": 4000, "A100-SXM4-80GB": 2039,
    "A100 80GB PCIe": 1935, "A100": 1555, "L40S": 864, "L40": 864, "L4": 300, "A10G": 600, "A10": 600,
    "T4": 320, "V100": 900, "RTX 4090": 1008, "RTX 3090": 936, "RTX A6000": 768,
}


def gpu_bandwidth_bytes_per_s(device: int = 0) -> float | None:
    """Peak memory bandwidth of a CUDA device: clock x bus width if torch reports them, else by name."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(device)
    except Exception:  # noqa: BLE001 - no torch / no driver: no ceiling
        return None
    clock_khz = getattr(props, "memory_clock_rate", 0) or 0
    bus_bits = getattr(props, "memory_bus_width", 0) or 0
    if clock_khz and bus_bits:
        return clock_khz * 1e3 * 2 * bus_bits / 8     # double data rate
    for name, gbs in GPU_BANDWIDTH_GBS.items():       # most specific names first
        if name.lower() in props.name.lower():
            return gbs * 1e9
    return None


def model_bytes(llm) -> int | None:
    """Bytes read per generated token: every weight once (one replica)."""
    replicas = getattr(llm, "replicas", None)
    if replicas:
        model = replicas[0].model
        return sum(p.numel() * p.element_size() for p in model.parameters())
    inner = getattr(llm, "llm", None)
    path = getattr(inner, "model_path", None)
    return Path(path).stat().st_size if path and Path(path).exists() else None


def bandwidth_fraction(tokens_per_s: float, bytes_per_token: float, bandwidth_bytes_per_s: float) -> float:
    """Decode speed as a fraction of the memory-bandwidth ceiling (1.0 = every byte of bandwidth used
    to stream the weights; batch 1 decoding cannot go faster)."""
    return tokens_per_s * bytes_per_token / bandwidth_bytes_per_s


def uses_cuda(llm) -> bool:
    replicas = getattr(llm, "replicas", None)
    return bool(replicas) and str(replicas[0].device).startswith("cuda")


def prompts(ev, count_tokens, target_tokens: int, reps: int) -> list[list[dict]]:
    """`reps` answer prompts of about `target_tokens`, each over different documents."""
    from rag.events import Hit
    from rag.answer.prompt import answer_messages

    texts = [(ev.docs / n).read_text(encoding="utf-8") for n in ev.doc_names()]
    texts = [t for t in texts if len(t) > 4 * target_tokens + 2000] or texts
    out = []
    for r in range(reps):
        doc = texts[(r * 7) % len(texts)]
        base = sum(count_tokens(m["content"]) + 4 for m in answer_messages(QUESTION, [Hit("0", "", "x")], [], False))
        lo, hi = 0, len(doc)
        while hi - lo > 20:   # the longest prefix of the document that fits the target
            mid = (lo + hi) // 2
            if base + count_tokens(doc[:mid]) <= target_tokens:
                lo = mid
            else:
                hi = mid
        out.append(answer_messages(QUESTION, [Hit("1", doc[:lo], "squad.txt")], [], False))
    return out


def measure(llm, messages, max_new: int, count_tokens) -> dict:
    from rag.models.llm import GenerationSettings

    t0 = time.perf_counter()
    first = last = None
    parts = []
    for delta in llm.stream(messages, GenerationSettings(max_new, 0.0)):
        now = time.perf_counter()
        first = first or now
        last = now
        parts.append(delta)
    n = count_tokens("".join(parts))
    decode = (n - 1) / (last - first) if first and last and last > first and n > 1 else float("nan")
    return {"ttft": (first or time.perf_counter()) - t0, "tokens": n, "tok_s": decode,
            "total_s": (last or time.perf_counter()) - t0}


def start_server(gguf: str, n_ctx: int, threads: int, batch: int) -> tuple[subprocess.Popen, str]:
    import httpx

    import tempfile

    port = free_port()
    log = tempfile.TemporaryFile()   # not a pipe: llama.cpp's load log would fill it and block the server
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
                             "--n_threads_batch", str(batch), "--interrupt_requests", "false"],
                            stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError("llama_cpp.server exited: " + log.read().decode(errors="replace")[-300:])
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("llama_cpp.server did not answer within 90 s")


def run(ctx: Context) -> Section:
    ev = squad(ctx)
    lengths = LENGTHS[:1] if ctx.quick else LENGTHS
    max_new = 8 if ctx.quick else 128
    reps = 1 if ctx.quick else 2
    section = Section("generation", "Generation speed per LLM backend")
    data = data_dir("generation", ctx)
    base = engines(data)
    n_ctx, threads, batch = base.cfg.llm.n_ctx, base.cfg.llm.n_threads, base.cfg.llm.n_threads_batch
    assert n_ctx >= 4096, "n_ctx must hold the 3,000-token prompt"
    ref = base.llm                       # llama.cpp: loads in 0.1 s; its tokenizer counts for every backend
    count = ref.count_tokens
    from common.shipped import resolve

    gguf = resolve(base.cfg.llm.model, base.cache_dir)
    backends, server = {"llamacpp": ref}, None
    load_s = {"llamacpp": None}
    if not ctx.quick:   # the same engine with other thread counts (generation / prompt reading)
        for t, b in ((1, 1), (2, 2)):
            if (t, b) != (threads, batch):
                backends[f"llamacpp, threads {t}/{b}"] = engines(data, f"llm.n_threads={t}",
                                                                 f"llm.n_threads_batch={b}").llm
    import torch

    torch_threads = torch.get_num_threads()   # the transformers backend sets it for the whole process
    try:
        import rag.models.llm_hf  # noqa: F401

        t = time.perf_counter()
        backends["transformers"] = engines(data, "llm.backend=transformers").llm
        load_s["transformers"] = time.perf_counter() - t
    except Exception as err:  # noqa: BLE001 - another engineer's backend: skip it, say why
        section.notes.append(f"transformers backend skipped: {type(err).__name__}: {str(err)[:160]}")
    try:
        t = time.perf_counter()
        server, url = start_server(gguf, n_ctx, threads, batch)
        backends["openai"] = engines(data, "llm.backend=openai", f"llm.base_url={url}", "llm.model=local").llm
        load_s["openai"] = time.perf_counter() - t
    except Exception as err:  # noqa: BLE001
        section.notes.append(f"openai backend (llama_cpp.server on loopback) skipped: {type(err).__name__}: "
                             f"{str(err)[:160]}")
    try:
        for llm in backends.values():   # warm-up: first calls page in weights, build graphs
            measure(llm, prompts(ev, count, 200, 1)[0], 4, count)
        results: dict[tuple[str, int], list[dict]] = {}
        for length in lengths:
            ps = prompts(ev, count, length, reps)
            for r, messages in enumerate(ps):
                for name, llm in backends.items():
                    m = measure(llm, messages, max_new, count)
                    m["prompt_tokens"] = sum(count(x["content"]) for x in messages)
                    results.setdefault((name, length), []).append(m)
                    print(f"  {name:<12} {length:>5} tokens rep {r + 1}: first token {m['ttft']:.2f} s, "
                          f"{m['tokens']} tokens at {m['tok_s']:.1f} tok/s ({load_now()})", flush=True)
    finally:
        torch.set_num_threads(torch_threads)   # later benchmarks measure the default profile's embedder
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
    import statistics

    bandwidth = gpu_bandwidth_bytes_per_s()
    table = Table(f"Time to first token and decode speed, median of {reps} (different text each time), greedy, "
                  f"max {max_new} new tokens, n_ctx {n_ctx}; default threads {threads} generating / {batch} "
                  "reading the prompt",
                  ["backend", "prompt tokens (target)", "prompt tokens (measured)", "first token s", "tokens/s",
                   "tokens generated", "vs llamacpp tok/s", "of bandwidth ceiling"])
    for length in lengths:
        ref_tok = statistics.median(m["tok_s"] for m in results[("llamacpp", length)])
        for name, llm in backends.items():
            ms = results[(name, length)]
            tok_s = statistics.median(m["tok_s"] for m in ms)
            ceiling = "n/a (CPU)"
            if bandwidth and uses_cuda(llm) and model_bytes(llm):
                ceiling = f"{100 * bandwidth_fraction(tok_s, model_bytes(llm), bandwidth):.1f} %"
            table.add(name, length, statistics.median(m["prompt_tokens"] for m in ms),
                      statistics.median(m["ttft"] for m in ms), tok_s,
                      statistics.median(m["tokens"] for m in ms), tok_s / ref_tok, ceiling)
            section.figures[f"{name} {length}"] = {"ttft": statistics.median(m["ttft"] for m in ms), "tok_s": tok_s}
    section.tables.append(table)
    loads = ", ".join(f"{k} {v:.1f} s" for k, v in load_s.items() if v is not None)
    if loads:
        section.notes.append(f"Load times in this run (cached conversions): {loads} (openai: server start + client).")
    section.notes.append("Each backend runs one generation at a time on the same cores; the openai row pays "
                         "HTTP + JSON streaming on top of the same llama.cpp engine (server started with the "
                         f"default threads {threads}/{batch}). 'llamacpp, threads g/p' rows are the default backend "
                         "with llm.n_threads=g and llm.n_threads_batch=p: when other processes hold a core, "
                         "llama.cpp's threads wait for each other at every operation, so fewer threads can be faster.")
    forget("llm")   # the float32 transformers copy is large: let later benchmarks load what they need
    return section
