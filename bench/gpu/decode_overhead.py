"""Why is decode ~15 tok/s on an H200? SmolLM2-135M's architecture (its config) with random bf16 weights
(decode cost does not depend on weight values), timed at each layer of the stack:
  raw     one decode step at a time (model forward with KV cache), synchronized
  plain   model.generate, no streamer, torch threads 16 vs 1
  stream  model.generate in a thread with TextIteratorStreamer (what llm_hf.py does), threads 16 vs 1
  project rag.models.llm_hf.TransformersModel.stream via bench.generation.measure, llm.n_threads 1 vs 16
  profile torch.profiler of one 16-token generate: top ops by self CPU time
usage: python bench/gpu/decode_overhead.py MODEL_DIR WORKDIR ; prints RESULT lines. MODEL_DIR: a transformers
folder of SmolLM2-135M (its config and tokenizer are used; e.g. the float32 copy llm_hf.convert_gguf makes under
<data_dir>/cache/hf-SmolLM2-135M-Instruct-Q4_1). Results of one H200 run: bench/RESULTS.md, "GPU code path"."""
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SQUAD = ROOT.parent / "shared" / "eval" / "squad-train"
os.environ["HF_HUB_OFFLINE"] = "1"
import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer  # noqa: E402

N = int(os.environ.get("DIAG_NEW", "128"))
DEV = "cuda" if torch.cuda.is_available() else "cpu"
OUT = Path(os.environ.get("OUT", "."))


def emit(kind, **d):
    line = json.dumps({"kind": kind, **d}, default=str)
    print("RESULT " + line, flush=True)
    with (OUT / "diag.jsonl").open("a") as f:
        f.write(line + "\n")


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


source, work = Path(sys.argv[1]), Path(sys.argv[2])
shutil.rmtree(work, ignore_errors=True)
work.mkdir(parents=True)
for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    if (source / name).exists():
        shutil.copy2(source / name, work / name)
torch.manual_seed(0)
m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(work), dtype=torch.bfloat16)
m.save_pretrained(work)
del m
tok = AutoTokenizer.from_pretrained(work)
model = AutoModelForCausalLM.from_pretrained(work, dtype=torch.bfloat16, device_map={"": DEV}).eval()
doc = sorted((SQUAD / "docs").glob("*.txt"))[0].read_text()
ids = tok(doc, return_tensors="pt")
ids = {k: v[:, :300].to(DEV) for k, v in ids.items()}
default_threads = torch.get_num_threads()
emit("diag_env", device=DEV, threads=default_threads, prompt=int(ids["input_ids"].shape[1]), new=N,
     attn=getattr(model.config, "_attn_implementation", None), gen_cfg=str(model.generation_config)[:300])

# raw decode steps
with torch.inference_mode():
    for threads in (default_threads, 1):
        torch.set_num_threads(threads)
        out = model(**ids, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for _ in range(5):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        sync()
        t0 = time.perf_counter()
        steps = N
        for _ in range(steps):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        sync()
        dt = time.perf_counter() - t0
        emit("raw_step", threads=threads, ms_per_token=1000 * dt / steps, tok_s=steps / dt)
torch.set_num_threads(default_threads)


def generate(n, streamer, threads):
    kw = dict(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, temperature=None, top_p=None,
              top_k=None, pad_token_id=tok.eos_token_id)
    first = None
    sync()
    t0 = time.perf_counter()
    if streamer:
        st = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)

        def run():
            torch.set_num_threads(threads)
            with torch.inference_mode():
                model.generate(**kw, streamer=st)
        th = threading.Thread(target=run, daemon=True)
        th.start()
        for piece in st:
            if piece and first is None:
                first = time.perf_counter() - t0
        th.join()
    else:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            model.generate(**kw)
    sync()
    return time.perf_counter() - t0, first


for streamer in (False, True):
    for threads in (default_threads, 1):
        generate(8, streamer, threads)   # warm-up
        short = generate(8, streamer, threads)[0]
        longs = [generate(N, streamer, threads)]
        long = min(t for t, _ in longs)
        per = (long - short) / (N - 8)
        emit("generate", streamer=streamer, threads=threads, total_8_s=short, total_n_s=long,
             ms_per_token=1000 * per, tok_s=1 / per, first_piece_s=longs[0][1])
torch.set_num_threads(default_threads)

# the project's path
from bench.common import Eval  # noqa: E402
from bench.generation import measure, prompts  # noqa: E402
from rag.config import LLMConfig  # noqa: E402
from rag.models.llm_hf import TransformersModel  # noqa: E402

ev = Eval(SQUAD)
for n_threads in (1, default_threads):
    llm = TransformersModel(LLMConfig(backend="transformers", model=str(work), device=DEV if DEV == "cuda" else "cpu",
                                      n_threads=n_threads), work.parent / "cache")
    msgs = prompts(ev, llm.count_tokens, 300, 2)
    measure(llm, msgs[0], 8, llm.count_tokens)
    rows = [measure(llm, m, N, llm.count_tokens) for m in msgs]
    emit("project", n_threads=n_threads, torch_threads_after=torch.get_num_threads(),
         tok_s=statistics.median(r["tok_s"] for r in rows), ttft_s=statistics.median(r["ttft"] for r in rows),
         rows=rows)
    del llm
torch.set_num_threads(default_threads)

# profile
from torch.profiler import ProfilerActivity, profile  # noqa: E402

acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEV == "cuda" else [])
with profile(activities=acts) as prof:
    generate(16, False, default_threads)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=50), flush=True)
if DEV == "cuda":
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=8, max_name_column_width=50),
          flush=True)
print("diag done", flush=True)
