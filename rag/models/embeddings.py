"""Embedder interface and its backends, chosen by `embeddings.backend` and `embeddings.runtime`.

`runtime: torch` runs the model as sentence-transformers loads it. `onnx` and `onnx-int8` (the default)
export the same model once to ONNX under `<cache_dir>/onnx/<model>/` or `$RAG_ONNX_CACHE/<model>/`
(plain torch.onnx export: optimum's sentence-transformers ONNX backend needs transformers < 4.58,
this project pins 5.x), quantize it
to int8 on demand (onnxruntime dynamic quantization of the MatMul weights, per output channel), and
run it with onnxruntime; the pooling and normalisation of the sentence-transformers model are
applied in numpy, so the vectors match the torch ones (cosine 1.0 for onnx, ~0.995 for onnx-int8).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import warnings
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rag.config import EmbeddingsConfig
from common.errors import BackendError
from common.shipped import is_shipped, resolve

log = logging.getLogger(__name__)


SEGMENT = 65_536   # characters per piece when a long text is tokenized in parallel


def token_spans(tokenizer, text: str) -> np.ndarray:
    """(start, end) character offsets of the tokens of `text` by a fast Hugging Face tokenizer, without
    special tokens and never truncated: the chunker tokenizes each section once and measures its
    pieces by these. Set the tokenizer's model_max_length high, or it warns about long texts.

    A long text under a tokenizer that splits words at whitespace first (BERT's, as all-MiniLM and
    all-mpnet use) is cut at spaces into pieces tokenized as one batch, in parallel: the same tokens."""
    options = dict(add_special_tokens=False, truncation=False, padding=False, return_offsets_mapping=True,
                   return_attention_mask=False, return_token_type_ids=False)
    cuts = [0]
    if len(text) > 2 * SEGMENT and type(tokenizer.backend_tokenizer.pre_tokenizer).__name__ == "BertPreTokenizer":
        while len(text) - cuts[-1] > 2 * SEGMENT:
            space = text.find(" ", cuts[-1] + SEGMENT, cuts[-1] + 2 * SEGMENT)
            if space < 0:
                break
            cuts.append(space)
    if len(cuts) == 1:
        enc = tokenizer(text, return_tensors="np", **options)
        return np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    cuts.append(len(text))
    enc = tokenizer([text[a:b] for a, b in zip(cuts, cuts[1:])], **options)
    return np.concatenate([np.asarray(spans, dtype=np.int64).reshape(-1, 2) + start
                           for spans, start in zip(enc["offset_mapping"], cuts)])


class Embedder(ABC):
    """Turns texts into L2-normalised float32 vectors (so inner product = cosine)."""

    name: str
    dimension: int
    max_tokens: int

    @abstractmethod
    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` (the chunker's measure), from a tokenizer of its own: see `_share_safely`."""
        with self._count_lock:
            return len(self._counter.encode(text, add_special_tokens=False))

    def token_spans(self, text: str) -> np.ndarray:
        """(start, end) character offsets of the tokens of `text` (the chunker's measure)."""
        with self._count_lock:
            return token_spans(self._counter, text)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def _share_safely(self, tokenizer) -> None:
        """Make the embedder safe to share between threads (an ingest counts tokens and embeds while
        questions are embedded). A Hugging Face tokenizer keeps truncation and padding as state that
        each call sets (counting turns them off, embedding on): two threads on one tokenizer got
        batches without padding ("Unable to create tensor", ValueError) or "Already borrowed". So
        counting gets a copy of its own, and each use of `tokenizer` for embedding holds
        `_encode_lock`, one batch at a time (a question waits for at most one ingest batch)."""
        self._counter = copy.deepcopy(tokenizer)
        self._counter.model_max_length = 1 << 30    # counts whole sections: no "longer than 512" warning
        self._count_lock = threading.Lock()
        self._encode_lock = threading.Lock()


class SentenceTransformerEmbedder(Embedder):
    def __init__(self, cfg: EmbeddingsConfig, cache_dir: Path):
        if is_shipped(cfg.model):   # a shipped model is local: never let the hub client phone home
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer   # heavy import: only when used

        path = resolve(cfg.model, cache_dir)
        try:
            self.model = SentenceTransformer(path, device=cfg.device)
        except Exception as err:  # noqa: BLE001 - any load failure is a backend problem for the user
            raise BackendError(f"could not load embedding model '{cfg.model}' ({path}): "
                               f"{type(err).__name__}: {str(err)[:200]}") from err
        self.name = cfg.model
        self.batch_size = cfg.batch_size
        self.dimension = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)
        self.tokenizer = self.model.tokenizer
        self._share_safely(self.tokenizer)

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # Longest first, as sentence-transformers does, so each batch pads to similar lengths; one
        # batch per turn of the lock, so a question is not held up by a whole document's embedding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in tqdm(range(0, len(order), self.batch_size), desc="embed", disable=not progress, leave=False):
            rows = order[start:start + self.batch_size]
            with self._encode_lock:
                out[rows] = self.model.encode([texts[i] for i in rows], batch_size=self.batch_size,
                                              normalize_embeddings=True, show_progress_bar=False,
                                              convert_to_numpy=True)
        return out


ONNX_FORMAT = 1
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


def _export_onnx(path: str, out: Path) -> None:
    """sentence-transformers model (Transformer -> Pooling -> optional Normalize) -> out/model.onnx,
    its tokenizer, and onnx.json (inputs, pooling, dimension, max_seq_length)."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(path, device="cpu")
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
        torch.onnx.export(Wrapper(), tuple(example[n] for n in names), str(out / "model.onnx"), dynamo=False,
                          input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17)
    tokenizer.save_pretrained(str(out))
    meta = {"format": ONNX_FORMAT, "inputs": names, "pooling": pooling, "dimension":
            int(st.get_embedding_dimension()), "max_seq_length": int(st.max_seq_length)}
    (out / "onnx.json").write_text(json.dumps(meta, indent=2))


def _quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = dst.with_name(dst.name + ".tmp")
    # MatMul weights only, per output channel: quantizing the embedding table or per tensor cost
    # cosine 0.95 against torch here; this keeps ~0.995 at nearly the same speed.
    logging.disable(logging.WARNING)   # the quantizer logs every tensor through the root logger
    try:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])
    finally:
        logging.disable(logging.NOTSET)
    os.replace(tmp, dst)


def ensure_onnx(model: str, cache_dir: Path, int8: bool) -> Path:
    """The ONNX export of `model` (and its int8 copy when asked), made once and reused while the source
    files are unchanged. A file lock keeps two processes from exporting at once."""
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
        export = not (out / "export.json").exists() or json.loads((out / "export.json").read_text()) != stamp
        steps = int(export) + int(int8)
        # Shown at start-up (serve logs at INFO) and as a bar on a terminal (the CLI logs only warnings):
        # the first start with a new data dir or model pauses here, about 10 s on 2 CPU cores.
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
                _export_onnx(path, staging)
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


class OnnxEmbedder(Embedder):
    """The sentence-transformers model exported to ONNX, run by onnxruntime (runtime onnx / onnx-int8)."""

    def __init__(self, cfg: EmbeddingsConfig, cache_dir: Path):
        if is_shipped(cfg.model):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendError("embeddings.runtime onnx needs onnxruntime; run: pip install onnxruntime "
                               "(or use embeddings.runtime torch)") from err
        int8 = cfg.runtime == "onnx-int8"
        try:
            import onnx  # noqa: F401 - needed to export and quantize (once), not to run
        except ImportError:
            if not (onnx_folder(cfg.model, cache_dir) / ("model-int8.onnx" if int8 else "model.onnx")).exists():
                raise BackendError("embeddings.runtime onnx needs the onnx package for the one-time export; "
                                   "run: pip install onnx (or use embeddings.runtime torch)") from None
        folder = ensure_onnx(cfg.model, cache_dir, int8)
        meta = json.loads((folder / "onnx.json").read_text())
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        # count_tokens measures whole documents for the chunker; only embedding truncates (max_length below).
        self.tokenizer.model_max_length = 1 << 30
        self._share_safely(self.tokenizer)
        options = ort.SessionOptions()
        # Do not spin idle worker threads: the LLM runs on the same cores right after a query is embedded.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if cfg.device.startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                log.warning("embeddings.device %s: onnxruntime has no CUDA provider here; running on CPU", cfg.device)
        self.session = ort.InferenceSession(str(folder / ("model-int8.onnx" if int8 else "model.onnx")),
                                            options, providers=providers)
        self.inputs = list(meta["inputs"])
        self.pooling = meta["pooling"]
        self.name = cfg.model
        self.runtime = cfg.runtime
        self.batch_size = cfg.batch_size
        self.dimension = int(meta["dimension"])
        self.max_tokens = int(meta["max_seq_length"])

    def _run(self, batch: list[str]) -> np.ndarray:
        with self._encode_lock:        # the tokenizer, not the session: onnxruntime runs calls in parallel
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_tokens,
                                 return_tensors="np")
        feeds = {n: np.asarray(enc[n], dtype=np.int64) for n in self.inputs}
        hidden = self.session.run(["last_hidden_state"], feeds)[0]
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        if self.pooling == "cls":
            vecs = hidden[:, 0]
        elif self.pooling == "max":
            vecs = np.where(mask > 0, hidden, -1e9).max(axis=1)
        else:
            vecs = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        # Longest first, as sentence-transformers does, so each batch pads to similar lengths.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in tqdm(range(0, len(order), self.batch_size), desc="embed", disable=not progress, leave=False):
            rows = order[start:start + self.batch_size]
            out[rows] = self._run([texts[i] for i in rows])
        return out


BACKENDS = {"sentence-transformers": SentenceTransformerEmbedder}


def load_embedder(cfg: EmbeddingsConfig, cache_dir: Path) -> Embedder:
    if cfg.runtime != "torch":
        return OnnxEmbedder(cfg, cache_dir)
    return BACKENDS[cfg.backend](cfg, cache_dir)
