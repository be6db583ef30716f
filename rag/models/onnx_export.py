"""The one-time ONNX export of a sentence-transformers embedder (embeddings.runtime onnx / onnx-int8).

Steps, each shown on a progress bar and logged, done once per model under `<cache_dir>/onnx/<model>/` or
`$RAG_ONNX_CACHE/<model>/` and redone when the source files or ONNX_FORMAT change (export.json):
1. torch.onnx export of the transformer with eager attention (optimum's sentence-transformers ONNX
   backend needs transformers < 4.58, this project pins 5.x);
2. onnxruntime's transformer optimizer fuses each layer's attention, LayerNorm + residual and GELU into
   single operators, kept only if its output agrees with the plain export's;
3. (onnx-int8) dynamic int8 quantization of the MatMul and fused Attention weights, per output channel.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.errors import BackendError
from common.shipped import is_shipped, resolve

log = logging.getLogger("rag.models.embeddings")   # the export's lines belong to the embedder's log

# 2: eager-attention export fused by the transformer optimizer, int8 covering the fused Attention too
# (1.4-1.6x format 1's embedding speed on the 2-core box, bench/RESULTS.md). A changed format is part
# of the stamp, so older exports are redone once.
ONNX_FORMAT = 2
_ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _source_stamp(path: str) -> dict:
    """What the export was made from: a local folder's weight/config files (name, size, mtime), or a hub id."""
    folder = Path(path)
    if not folder.is_dir():
        return {"model": path}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".json"))
    return {"model": str(folder.resolve()),
            "files": [[p.relative_to(folder).as_posix(), p.stat().st_size, int(p.stat().st_mtime)] for p in files]}


# A folder for the ONNX exports of every data dir instead of each one's <data_dir>/cache/onnx: the tests
# (dozens of fresh data dirs, some in child processes) and machines with many data dirs export once.
ONNX_CACHE_ENV = "RAG_ONNX_CACHE"


def onnx_folder(model: str, cache_dir: Path) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model[len("shipped:"):] if is_shipped(model) else model).strip("_")
    shared = os.environ.get(ONNX_CACHE_ENV)
    return (Path(shared).expanduser() if shared else Path(cache_dir) / "onnx") / (slug[-80:] or "model")


def _export_onnx(path: str, out: Path) -> dict:
    """sentence-transformers model (Transformer -> Pooling -> optional Normalize) -> out/model-plain.onnx,
    its tokenizer, and onnx.json (inputs, pooling, dimension, max_seq_length). Returns what step 2 needs."""
    import torch
    from sentence_transformers import SentenceTransformer

    # Eager attention: the SDPA default exports a graph the optimizer does not recognise (no layer fused).
    st = SentenceTransformer(path, device="cpu", model_kwargs={"attn_implementation": "eager"})
    kinds = [type(m).__name__ for m in st]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise BackendError(f"embeddings.runtime onnx supports Transformer + Pooling (+ Normalize) models; "
                           f"'{path}' has {' + '.join(kinds)}: use embeddings.runtime torch")
    pooling = str(getattr(st[1], "pooling_mode", "mean"))
    if pooling not in ("mean", "cls", "max"):
        raise BackendError(f"embeddings.runtime onnx: pooling '{pooling}' is not supported; use runtime torch")
    tokenizer = st.tokenizer
    example = tokenizer(["a short text", "a somewhat longer example text for the export"], padding=True,
                        return_tensors="pt")
    names = [n for n in _ONNX_INPUTS if n in example]
    model = st[0].auto_model.eval()

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs))).last_hidden_state

    axes = {n: {0: "batch", 1: "tokens"} for n in names + ["last_hidden_state"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapper(), tuple(example[n] for n in names), str(out / "model-plain.onnx"), dynamo=False,
                          input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17)
    tokenizer.save_pretrained(str(out))
    meta = {"format": ONNX_FORMAT, "inputs": names, "pooling": pooling, "dimension":
            int(st.get_embedding_dimension()), "max_seq_length": int(st.max_seq_length)}
    (out / "onnx.json").write_text(json.dumps(meta, indent=2))
    config = model.config
    check = tokenizer(["The mayor is Helen Ward.", "Cotton is a soft, fluffy staple fibre that grows in a boll "
                       "around the seeds of cotton plants, in a padded batch."], padding=True, return_tensors="np")
    return {"heads": int(getattr(config, "num_attention_heads", 0)), "hidden": int(getattr(config, "hidden_size", 0)),
            "feeds": {n: np.asarray(check[n], dtype=np.int64) for n in names}}


def _optimize(out: Path, info: dict) -> int:
    """out/model-plain.onnx -> out/model.onnx with attention, LayerNorm and GELU fused; the plain export
    if the optimizer fails or its output differs (a model it does not know). Returns the fused layers."""
    import onnxruntime as ort
    from onnxruntime.transformers.optimizer import optimize_model

    plain, fused_path = out / "model-plain.onnx", out / "model-fused.onnx"
    fused = 0
    try:
        logging.disable(logging.WARNING)    # the optimizer logs each fusion through the root logger
        try:
            # opt_level 0: the fusions only; the session applies the CPU-specific rewrites when it loads
            model = optimize_model(str(plain), model_type="bert", num_heads=info["heads"],
                                   hidden_size=info["hidden"], opt_level=0)
            fused = int(model.get_fused_operator_statistics().get("Attention", 0))
            model.save_model_to_file(str(fused_path))
        finally:
            logging.disable(logging.NOTSET)
        feeds = info["feeds"]
        runs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
                for p in (plain, fused_path)]
        mask = feeds["attention_mask"].astype(bool)
        a, b = runs[0][mask], runs[1][mask]      # real tokens only: padding's outputs are never pooled
        cosine = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
        if cosine.min() < 0.9999:
            raise ValueError(f"fused model differs from the plain export (cosine {cosine.min():.5f})")
    except Exception as err:  # noqa: BLE001 - an unknown architecture keeps the plain export, just slower
        log.warning("embedding model: ONNX fusion skipped (%s: %s); using the plain export",
                    type(err).__name__, str(err)[:200])
        fused_path.unlink(missing_ok=True)
        plain.rename(out / "model.onnx")
        return 0
    fused_path.rename(out / "model.onnx")
    plain.unlink()
    return fused


def _quantize_int8(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = dst.with_name(dst.name + ".tmp")
    # MatMul and fused Attention weights only, per output channel: quantizing the embedding table or
    # per tensor cost cosine 0.95 against torch here; this keeps ~0.995. Attention's QKV weights are
    # a quarter of the MatMul work; leaving them float made the fused model slower than format 1.
    logging.disable(logging.WARNING)   # the quantizer logs every tensor through the root logger
    try:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Attention"],
                         # the fused operators are not in ONNX's shape inference: their outputs are float
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.disable(logging.NOTSET)
    os.replace(tmp, dst)


def ensure_onnx(model: str, cache_dir: Path, int8: bool) -> Path:
    """The ONNX export of `model` (and its int8 copy when asked), made once and reused while the source
    files and ONNX_FORMAT are unchanged. A file lock keeps two processes from exporting at once."""
    from filelock import FileLock

    path = resolve(model, cache_dir)
    out = onnx_folder(model, cache_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = {"format": ONNX_FORMAT, "source": _source_stamp(path)}

    def current() -> bool:
        try:
            return (json.loads((out / "export.json").read_text()) == stamp and (out / "model.onnx").exists()
                    and (not int8 or (out / "model-int8.onnx").exists()))
        except (OSError, ValueError):
            return False

    if current():
        return out
    with FileLock(str(out.with_name(out.name + ".lock"))):
        if current():
            return out
        try:
            export = json.loads((out / "export.json").read_text()) != stamp
        except (OSError, ValueError):
            export = True
        steps = 2 * int(export) + int(int8)
        # Shown at start-up (serve logs at INFO) and as a bar on a terminal (the CLI logs only warnings):
        # the first start with a new data dir, model or export format pauses here, ~15 s on 2 CPU cores.
        log.info("embedding model %s: one-time ONNX%s export into %s (about 10-30 s)", model,
                 " + int8" if int8 else "", out)
        started = time.monotonic()
        bar = tqdm(total=steps, desc="embedding model: one-time ONNX export", unit="step", file=sys.stderr,
                   disable=None, leave=False)
        try:
            if export:
                staging = out.with_name(out.name + ".tmp")
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
                info = _export_onnx(path, staging)
                bar.update(1)
                bar.set_description("embedding model: fusing layers")
                fused = _optimize(staging, info)
                meta = json.loads((staging / "onnx.json").read_text())
                (staging / "onnx.json").write_text(json.dumps({**meta, "fused_attention": fused}, indent=2))
                (staging / "export.json").write_text(json.dumps(stamp, indent=2))
                shutil.rmtree(out, ignore_errors=True)
                staging.rename(out)
                bar.update(1)
            if int8 and not (out / "model-int8.onnx").exists():
                bar.set_description("embedding model: quantizing to int8")
                _quantize_int8(out / "model.onnx", out / "model-int8.onnx")
                bar.update(1)
        except BackendError:
            raise
        except Exception as err:  # noqa: BLE001 - export problems are backend problems for the user
            raise BackendError(f"could not export embedding model '{model}' to ONNX: {type(err).__name__}: "
                               f"{str(err)[:200]}; use embeddings.runtime torch") from err
        finally:
            bar.close()
        log.info("embedding model %s: ONNX export done in %.1f s", model, time.monotonic() - started)
    return out
