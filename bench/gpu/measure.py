"""GPU measurements of the project's own code, one subcommand per part (run from the repository root on a
machine with a CUDA GPU: `python bench/gpu/measure.py env|plan|embed|llm ...`; bench/RESULTS.md "GPU code
path" has one H200 run and its exact commands):

  env    card, driver, versions, the bandwidth ceiling bench/generation.py computes
  plan   rag.models.placement.plan_engines + describe() on the real GPU for the shipped GPU profiles
  embed  SentenceTransformerEmbedder (all-MiniLM-L6-v2) chunks/s on cuda and on the CPU
  llm    TransformersModel (llm.backend transformers) on cuda: TTFT and decode tok/s through ChatModel.stream,
         with bench/generation.py's own prompts(), measure(), model_bytes() and bandwidth_fraction()

Every result is printed and appended as one JSON line to $OUT/results.jsonl (or ./results.jsonl).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]      # the repository root
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(os.environ.get("OUT", str(HERE))) / "results.jsonl"
MISTRAL_PARAMS = 7_241_732_096      # mistralai/Mistral-7B-Instruct-v0.2 (not carried: only its size is needed)


def emit(kind: str, **data) -> None:
    line = json.dumps({"kind": kind, **data}, default=str)
    print("RESULT " + line, flush=True)
    with RESULTS.open("a") as f:
        f.write(line + "\n")


def cmd_env(args) -> None:
    import torch
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "transformers": transformers.__version__, "cuda_available": torch.cuda.is_available()}
    for mod in ("sentence_transformers", "accelerate", "bitsandbytes", "gguf", "pydantic", "numpy", "tokenizers"):
        try:
            __import__(mod)
            from importlib.metadata import version

            info[mod] = version(mod.replace("_", "-"))
        except Exception as err:  # noqa: BLE001
            info[mod] = f"not importable: {type(err).__name__}: {str(err)[:120]}"
    try:
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as err:  # noqa: BLE001
        info["nvidia_smi"] = f"failed: {err}"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_total_gib=p.total_memory / 2**30, sms=p.multi_processor_count,
                    memory_clock_khz=getattr(p, "memory_clock_rate", None),
                    memory_bus_bits=getattr(p, "memory_bus_width", None))
        from bench.generation import gpu_bandwidth_bytes_per_s

        info["bandwidth_ceiling_gbs"] = (gpu_bandwidth_bytes_per_s() or 0) / 1e9
    info["cpu"] = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                        if l.startswith("model name")), "?")
    info["cpu_count"] = os.cpu_count()
    emit("env", **info)


def cmd_plan(args) -> None:
    """plan_engines on the real GPU: the shipped GPU profiles (Mistral-7B's size stands in for the model,
    which is not carried: llm_hf.model_gib is replaced by the same estimate from the parameter count),
    and the SmolLM2 GGUF on the transformers backend with every device auto (real model_gib)."""
    from rag.config import load_config
    from rag.models import llm_hf, placement
    from rag.models.placement import PlacementError, apply_plan, estimate_model_gib, plan_engines

    if args.fake_gpu:   # local dry run only
        placement.detect_gpus = lambda: [placement.GpuInfo("FAKE H200", 139.8, 139.2, 0)]
    real_model_gib = llm_hf.model_gib

    def mistral_gib(cfg, cache_dir):
        return estimate_model_gib(MISTRAL_PARAMS / 1e9, llm_hf._gpu_quantization(cfg))

    cases = [
        ("profiles/gpu-1.yaml", [], "mistral"),
        ("profiles/seed-2gpu.yaml", [], "mistral"),
        ("profiles/seed-2gpu.yaml", ["llm.quantization=none"], "mistral"),
        ("profiles/seed-2gpu.yaml", ["llm.quantization=none", 'llm.gpu_max_memory_gib={"0": 12}'], "mistral"),
        ("profiles/seed-2gpu.yaml", ["embeddings.device=cpu", "asr.device=cpu"], "mistral"),
    ]
    if args.gguf:
        cases.append((None, ["llm.backend=transformers", f"llm.model={args.gguf}", "llm.device=auto",
                             "embeddings.device=auto", "asr.device=auto"], "real"))
    for profile, overrides, size in cases:
        llm_hf.model_gib = mistral_gib if size == "mistral" else real_model_gib
        cfg = load_config(HERE / profile if profile else None, overrides)
        label = f"{profile or 'defaults'} {' '.join(overrides)}".strip()
        plan = None
        try:
            t0 = time.perf_counter()
            plan = plan_engines(cfg, Path(args.cache), llm_hf.model_gib)
            applied = apply_plan(cfg, plan)
            emit("plan", case=label, seconds=time.perf_counter() - t0, mode=plan.mode, replicas=plan.replicas,
                 model_gib=plan.model_gib, embedder=plan.embedder_device, whisper=plan.whisper_device,
                 whisper_compute=plan.whisper_compute_type, max_memory=plan.max_memory,
                 applied_devices=[applied.llm.device, applied.embeddings.device, applied.asr.device],
                 describe=plan.describe())
        except PlacementError as err:
            emit("plan", case=label, error=f"PlacementError: {err}")
        print("\n".join(["--- " + label] + (plan.describe() if plan else [])), flush=True)


def cmd_embed(args) -> None:
    import numpy as np
    import torch

    from rag.config import EmbeddingsConfig
    from rag.models.embeddings import SentenceTransformerEmbedder

    passages = json.loads(Path(args.passages).read_text())
    passages = (passages * (args.n // len(passages) + 1))[:args.n]
    vectors = {}
    for spec in args.runs:
        device, bs, reps = spec.split(",")
        bs, reps = int(bs), int(reps)
        if device.startswith("cuda") and not torch.cuda.is_available():
            emit("embed", device=device, error="no CUDA")
            continue
        t0 = time.perf_counter()
        emb = SentenceTransformerEmbedder(EmbeddingsConfig(model=args.model, device=device, batch_size=bs),
                                          Path(args.cache))
        load_s = time.perf_counter() - t0
        emb.embed(passages[:2 * bs])           # warm-up (kernels, allocator, thread pool)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            v = emb.embed(passages)              # numpy out: the GPU work is finished when it returns
            times.append(time.perf_counter() - t0)
        vectors[device] = v
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
        emit("embed", device=device, batch_size=bs, passages=len(passages), reps=reps, load_s=load_s,
             seconds=times, chunks_per_s=len(passages) / statistics.median(times),
             best_chunks_per_s=len(passages) / min(times), torch_threads=torch.get_num_threads(),
             model_device=str(emb.model.device), dtype=str(next(emb.model.parameters()).dtype),
             peak_cuda_mib=peak)
        del emb
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    gpu = next((v for d, v in vectors.items() if d.startswith("cuda")), None)
    if gpu is not None and "cpu" in vectors:
        cos = np.sum(gpu * vectors["cpu"], axis=1)
        emit("embed_agreement", min_cosine=float(cos.min()), mean_cosine=float(cos.mean()))


def cmd_llm(args) -> None:
    import torch

    from bench.common import Eval
    from bench.generation import bandwidth_fraction, gpu_bandwidth_bytes_per_s, measure, model_bytes, \
        prompts, uses_cuda
    from rag.config import LLMConfig
    from rag.models.llm_hf import TransformersModel

    ev = Eval(Path(args.squad))
    bandwidth = gpu_bandwidth_bytes_per_s()
    for quant in args.quant:
        cfg = LLMConfig(backend="transformers", model=args.gguf, device=args.device, quantization=quant,
                        n_ctx=args.n_ctx)
        try:
            t0 = time.perf_counter()
            llm = TransformersModel(cfg, Path(args.cache))    # plan=None: it plans and logs its own placement
            load_s = time.perf_counter() - t0
        except Exception as err:  # noqa: BLE001 - report, go on with the next
            emit("llm_load", quantization=quant, error=f"{type(err).__name__}: {str(err)[:400]}")
            continue
        model = llm.replicas[0].model
        weights = {str(p.dtype) for p in model.parameters()}
        nbytes = model_bytes(llm)
        emit("llm_load", quantization=quant, load_s=load_s, converted_now=llm.converted, source=llm.source,
             plan=llm.plan.describe(), device=str(model.device), weight_dtypes=sorted(weights),
             model_bytes=nbytes, quant_config=str(getattr(model.config, "quantization_config", None))[:300],
             cuda_mem_after_load_mib=torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else None)
        count = llm.count_tokens
        try:
            for _ in range(2):   # warm-up: first calls build kernels / allocator pools
                measure(llm, prompts(ev, count, 200, 1)[0], 8, count)
            for length in args.lengths:
                ps = prompts(ev, count, length, args.reps)
                rows = []
                for r, messages in enumerate(ps):
                    m = measure(llm, messages, args.max_new, count)
                    m["prompt_tokens"] = sum(count(x["content"]) for x in messages)
                    m["prompt_tokens_template"] = int(llm._encode(messages)["input_ids"].shape[1])
                    rows.append(m)
                    print(f"  {quant:<5} {length:>5} rep {r + 1}: first token {m['ttft']:.3f} s, {m['tokens']} tokens "
                          f"at {m['tok_s']:.1f} tok/s", flush=True)
                tok_s = statistics.median(m["tok_s"] for m in rows)
                frac = (bandwidth_fraction(tok_s, nbytes, bandwidth)
                        if bandwidth and uses_cuda(llm) and nbytes else None)
                emit("llm", quantization=quant, target_tokens=length, reps=len(rows), max_new=args.max_new,
                     prompt_tokens=statistics.median(m["prompt_tokens"] for m in rows),
                     prompt_tokens_template=statistics.median(m["prompt_tokens_template"] for m in rows),
                     ttft_s=statistics.median(m["ttft"] for m in rows), tok_s=tok_s,
                     tokens=statistics.median(m["tokens"] for m in rows),
                     total_s=statistics.median(m["total_s"] for m in rows),
                     bandwidth_fraction=frac, all=rows,
                     peak_cuda_mib=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None)
        except Exception as err:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            emit("llm", quantization=quant, error=f"{type(err).__name__}: {str(err)[:400]}")
        del llm, model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env")
    p = sub.add_parser("plan")
    p.add_argument("--cache", required=True)
    p.add_argument("--gguf")
    p.add_argument("--fake-gpu", action="store_true")
    p = sub.add_parser("embed")
    p.add_argument("--model", required=True)
    p.add_argument("--passages", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("runs", nargs="+", help="device,batch_size,reps")
    p = sub.add_parser("llm")
    p.add_argument("--gguf", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--squad", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quant", nargs="+", default=["none", "nf4"])
    p.add_argument("--lengths", nargs="+", type=int, default=[300, 1200, 3000])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--max-new", type=int, default=128)
    p.add_argument("--n-ctx", type=int, default=4096)
    args = ap.parse_args()
    t0 = time.perf_counter()
    {"env": cmd_env, "plan": cmd_plan, "embed": cmd_embed, "llm": cmd_llm}[args.cmd](args)
    print(f"[{args.cmd}] done in {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
