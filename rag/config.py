"""One validated, immutable configuration, loaded once and passed down.

`config.yaml` (or `--config PATH`) is read, `--set dotted.key=value` overrides are applied to the raw
mapping, and the result is validated by pydantic with unknown keys forbidden, so a typo is an error
that names the key instead of a setting silently ignored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from asr.config import ASRConfig
from common.errors import ConfigError
from common.settings import DEVICE_PATTERN, Section
from tts.config import TTSConfig


class DocumentsConfig(Section):
    folder: str | None = "txt"          # ingested on `serve`, and on first use when the index is empty
    auto_ingest: bool = True
    extensions: tuple[str, ...] = (".txt", ".md", ".markdown", ".pdf", ".html", ".htm", ".docx")
    max_file_mb: float = Field(50, gt=0)
    max_upload_files: int = Field(20, ge=1)
    url_timeout_s: float = Field(20, gt=0)
    url_max_mb: float = Field(10, gt=0)
    allow_private_urls: bool = False    # let URLs reach loopback/private/link-local addresses
    max_chars: int = Field(5_000_000, ge=1000)   # characters of text one document may have, once read


class ChunkingConfig(Section):
    # Sized in tokens of the embedding model's tokenizer: all-MiniLM-L6-v2 reads at most 256.
    chunk_tokens: int = Field(200, ge=16, le=2048)
    overlap_tokens: int = Field(40, ge=0)


class EmbeddingsConfig(Section):
    backend: Literal["sentence-transformers"] = "sentence-transformers"
    model: str = "shipped:all-MiniLM-L6-v2"
    # cpu, cuda, cuda:N, or auto: the GPU the placement plan picks (rag/models/placement.py), else the CPU.
    device: str = Field("cpu", pattern=DEVICE_PATTERN)
    batch_size: int = Field(32, ge=1)
    # torch: the model as sentence-transformers loads it. onnx: the same weights exported once to ONNX
    # under <data_dir>/cache/onnx and run by onnxruntime; onnx-int8: that export with int8 weights
    # (dynamic quantization, per channel), the default: about 4x torch's speed on a CPU at the same
    # answer-recall@5 (`python -m bench ingest`, bench/RESULTS.md). On a GPU, use torch.
    runtime: Literal["torch", "onnx", "onnx-int8"] = "onnx-int8"


class VectorStoreConfig(Section):
    backend: Literal["faiss", "qdrant"] = "faiss"
    index: Literal["auto", "flat", "hnsw"] = "auto"
    hnsw_min_chunks: int = Field(100_000, ge=1)   # "auto" switches from flat to HNSW at this size
    qdrant_url: str | None = None                 # None: embedded Qdrant under the data dir
    qdrant_collection: str = "chunks"
    qdrant_api_key_env: str = "QDRANT_API_KEY"


class RetrievalConfig(Section):
    k: int = Field(5, ge=1, le=50)
    candidates: int = Field(40, ge=1)     # per ranked list, before fusion
    rrf_k: int = Field(60, ge=1)
    lexical: bool = True                  # BM25 fused with dense search
    # How the dense and BM25 lists are fused (rag/retrieve.py): "relative" adds each list's scores scaled to
    # 0..1 (dense_weight for dense, the rest for BM25), so a passage far ahead in one list stays ahead;
    # "rrf" adds 1/(rrf_k + rank), which sees only ranks. On squad-train (400 questions) relative fusion
    # found the answer in the best 2 passages 0.8725 -> 0.91 of the time, in the best 5 0.9425 -> 0.9675;
    # dense_weight chosen on one document half and checked on the other (bench/RESULTS.md).
    fusion: Literal["relative", "rrf"] = "relative"
    dense_weight: float = Field(0.5, ge=0, le=1)
    # Below this best passage cosine similarity the documents are taken not to hold the answer, and the
    # model is not asked: a floor for the clearly off-topic ("hi" 0.07, "the capital of France?" 0.05).
    # A passage about several things (meeting minutes, a manual's page) matches a question about one of
    # them weakly as a whole: "Who voted against the Sunday library opening?" scored 0.28 against the
    # minutes that answer it. The sentence rule below is the finer test; at 0.30 this gate declined 5 of
    # 225 answerable squad-train questions that rule lets through, for 3 of 175 unanswerable ones. A sentence
    # at least abstain_weak_sentence_below close overrides it ("Where does glass go?": page 0.15, sentence 0.69).
    abstain_below: float = Field(0.20, ge=-1, le=1)
    # At or above this best passage cosine the passage is taken to be about the question, and the sentence
    # rules below do not decline: no unanswerable squad-train question came this close (highest 0.625 of 175),
    # while "Can I bring my dog to Harbor Desk?" (passage 0.77) was declined because no single sentence said
    # more than "Dogs are welcome on Fridays only" (0.44, seen as a new user). 1 turns this off.
    abstain_never_above: float = Field(0.65, ge=-1, le=1)
    # A second look at the passages the model would get (rag/answer/abstain.py): decline when no single
    # sentence is close to the question, or when the best is middling and most of the question's
    # words are missing. Chosen on half the squad-train documents, checked on the other half
    # (bench/quality.py); -1 turns a rule off.
    abstain_sentence_below: float = Field(0.45, ge=-1, le=1)
    abstain_weak_sentence_below: float = Field(0.60, ge=-1, le=1)
    abstain_coverage_below: float = Field(0.5, ge=0, le=1)
    # Weigh the question's words by their inverse document frequency over the indexed chunks when
    # measuring coverage (rare names and numbers count, common words barely); False: each word counts 1.
    abstain_coverage_idf: bool = False
    # In the same middling band, decline an English question that names something (a capitalised word)
    # no passage and no indexed chunk has: 0.80 -> 0.834 abstention, false abstention 0.062 unchanged,
    # on squad-train.
    abstain_missing_names: bool = True


class MemoryConfig(Section):
    rewrite: bool = True                 # ask the LLM for a standalone question on follow-ups
    history_turns: int = Field(2, ge=0)  # recent user turns added to the history-aware query
    max_messages: int = Field(40, ge=2)  # messages sent back to the model are cut to the newest
    # A question in another language than the documents is translated into theirs by the LLM (in the
    # same call as the follow-up rewrite) and fused with the original in retrieval (issue 16).
    translate: bool = True


class LLMConfig(Section):
    backend: Literal["llamacpp", "transformers", "openai"] = "llamacpp"
    model: str = "shipped:SmolLM2-135M-Instruct-Q4_1"
    n_ctx: int = Field(4096, ge=256)
    # Threads for generating and for reading the prompt. On 2 cores the answer is spoken while it is
    # written, so the LLM and the synthesizer (tts.threads = 1) each get a core. llama.cpp's threads
    # wait for each other at every step: beside one busy core, 2 threads read a 1,200-token prompt in
    # 13 s against 5.4 s for 1 thread (bench/RESULTS.md, "Generation"), so 1 is the safe default.
    n_threads: int = Field(1, ge=1)
    n_threads_batch: int = Field(1, ge=1)
    # Prompt reading when this is the only answer being written and no other task on the machine wants a
    # core (common/cpu.py): 2 threads read ~1.8x faster then, and slower than 1 when a core is busy.
    n_threads_batch_idle: int = Field(2, ge=1)
    # llama.cpp: the GGUF re-quantized once to a weight type with fast CPU kernels (rag/models/gguf_quantize.py).
    requantize: Literal["none", "iq4_nl", "q4_0", "q4_k_s", "q8_0"] = "none"
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)
    # transformers: cpu; auto (the plan's GPUs, else the CPU); cuda (all GPUs, which must exist); cuda:N (one).
    device: str = Field("cpu", pattern=DEVICE_PATTERN)
    quantization: Literal["none", "nf4"] = "none"
    gpu_max_memory_gib: dict[str, float] | None = None
    base_url: str | None = None           # openai backend
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(60, gt=0)
    max_waiting: int = Field(16, ge=0)    # requests queued behind a busy local model
    # llama.cpp: answers written at once, one context each over the one mapped model (0: one per
    # n_threads cores, at most 4; rag/models/llm.py `llamacpp_contexts`).
    contexts: int = Field(0, ge=0)
    wait_timeout_s: float = Field(120, gt=0)


class PromptConfig(Section):
    context_tokens: int = Field(1200, ge=64)   # budget for numbered sources in the prompt
    # At most this many of the k retrieved passages go to the model (None: as many as fit the budget).
    # A 135M model answers better and twice as fast from its best 2 passages than from 5 (bench/RESULTS.md).
    max_sources: int | None = Field(None, ge=1)
    max_question_chars: int = Field(4000, ge=10)
    # After the model's answer, quote the sentence of the sources that best matches the question
    # (rag/answer/evidence.py), verbatim with its [n]: shown, never spoken. On squad-train the model's words hold
    # the gold answer about 0.25-0.3 of the time, that sentence about 0.6 (bench/RESULTS.md, "quality").
    evidence: bool = True
    # The model reads only the N sentences of the sources that best match the question (each source
    # keeps at least its best; rag/answer/evidence.py `focus`): on squad-train as accurate as 2 whole passages
    # (gold in the model's words 0.24 vs 0.25, token F1 0.053 vs 0.047) from a prompt 2.4x shorter, so
    # the first word comes sooner. None: whole passages.
    focus_sentences: int | None = Field(3, ge=1)
    # One invented worked example before the question (few-shot). squad-train: 0.29 gold, F1 0.078, but
    # on the shipped documents it made the 135 M model copy the example's short numeric style with wrong
    # numbers ("supplies 10 homes"), so it is off by default.
    example: bool = False
    # The system prompt by name (rag/answer/prompt.py SYSTEMS): "default", or "answer-first" (the answer
    # stated first, in the model's own words), chosen per model family on squad-train (`python -m bench prompts`).
    system: Literal["default", "answer-first"] = "default"
    # The language answers are written in (en, de, es, fr...); None: the question's (issue 16).
    answer_language: str | None = Field(None, pattern=r"^[a-z]{2,3}$")


class CallConfig(Section):
    """Hands-free spoken conversation (the page's Talk button, `app.py converse`; rag/call.py)."""
    end_silence_s: float = Field(0.6, ge=0.1, le=5)    # silence after speech that ends the user's turn
    # Smart Turn v3.2 (asr/turn_end.py) asked at each pause: "finished" ends the turn then, "unfinished"
    # waits for incomplete_silence_s of silence instead of end_silence_s.
    smart_turn: bool = False
    incomplete_silence_s: float = Field(1.5, ge=0.1, le=10)
    min_speech_s: float = Field(0.25, ge=0.05, le=2)   # shorter sounds never start a turn (or a barge-in)
    vad_threshold: float = Field(0.5, gt=0, lt=1)      # Silero VAD speech probability
    echo_guard_s: float = Field(0.3, ge=0, le=5)       # speech this soon after our voice starts is not a barge-in
    # Start answering (held back, unseen) once the user has been silent this long and the words are
    # transcribed, before the turn is sure to be over; dropped if they speak on (0: off).
    speculate_after_s: float = Field(0.15, ge=0, le=5)
    # Silence after speech at which the words so far are transcribed for a possible end of the turn
    # (asr/turns.py `Paused`): the final transcript then takes ~0.15 s, so the sooner it starts the sooner
    # an answer can; a pause the user speaks on costs only that transcription (bench/RESULTS.md, issue 14).
    pause_s: float = Field(0.08, ge=0.03, le=2)
    partial_every_s: float = Field(1.0, ge=0)          # words-so-far while the user speaks (0: off)
    read_ahead: bool = True                            # with each words-so-far, read the prompt ahead (prefill)
    idle_end_s: float = Field(300, gt=0)               # a call with nobody speaking ends after this


class AuthConfig(Section):
    username_env: str = "RAG_USERNAME"
    password_env: str = "RAG_PASSWORD"
    username: str | None = None
    password: str | None = None


class ServerConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=1, le=65535)
    concurrency_limit: int = Field(4, ge=1)
    max_queue: int = Field(32, ge=1)
    max_queue_per_client: int = Field(4, ge=1)    # /ask requests one session id (else address) may have queued
    allowed_hosts: tuple[str, ...] = ()           # Host names besides loopback and `host`; "*" = any
    upload_cache_mb: float = Field(1000, gt=0)    # what Gradio's upload route may keep, all requests together
    auth: AuthConfig = AuthConfig()


class HistoryConfig(Section):
    backend: Literal["sqlite", "postgres"] = "sqlite"   # sqlite: <data_dir>/history.sqlite
    url: str | None = None               # postgresql://USER:PASSWORD@HOST:5432/DATABASE
    url_env: str = "RAG_HISTORY_URL"     # read when `url` is not set, so passwords stay out of files
    timeout_s: float = Field(5, gt=0)    # to connect, or to wait for a pooled connection
    pool_size: int = Field(4, ge=1)      # connections per app process


class CatalogConfig(Section):
    # The document catalog (chunk texts, vectors, manifest): the index's source of truth.
    backend: Literal["sqlite", "postgres"] = "sqlite"   # sqlite: <data_dir>/index/catalog.sqlite
    url: str | None = None               # postgresql://USER:PASSWORD@HOST:5432/DATABASE
    url_env: str = "RAG_CATALOG_URL"     # read when `url` is not set, so passwords stay out of files
    timeout_s: float = Field(5, gt=0)    # to connect, or to wait for a pooled connection
    pool_size: int = Field(4, ge=1)      # connections per app process


class Config(Section):
    data_dir: str = "data"
    documents: DocumentsConfig = DocumentsConfig()
    chunking: ChunkingConfig = ChunkingConfig()
    embeddings: EmbeddingsConfig = EmbeddingsConfig()
    vector_store: VectorStoreConfig = VectorStoreConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    memory: MemoryConfig = MemoryConfig()
    llm: LLMConfig = LLMConfig()
    prompt: PromptConfig = PromptConfig()
    asr: ASRConfig = ASRConfig()
    tts: TTSConfig = TTSConfig()
    call: CallConfig = CallConfig()
    server: ServerConfig = ServerConfig()
    history: HistoryConfig = HistoryConfig()
    catalog: CatalogConfig = CatalogConfig()

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node: Any = raw
    model: type[BaseModel] | None = Config
    for i, key in enumerate(keys):
        if model is not None and key not in model.model_fields:
            raise ConfigError(f"unknown config key '{'.'.join(keys[:i + 1])}' in --set {dotted}=...")
        annotation = model.model_fields[key].annotation if model is not None else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if i == len(keys) - 1:
            node[key] = value
        else:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]


def parse_override(text: str) -> tuple[str, Any]:
    """`retrieval.k=8` -> ("retrieval.k", 8); the value is read as YAML (numbers, booleans, null, lists)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got '{text}'")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    where = "".join(c if c.isprintable() else repr(c)[1:-1] for c in where)   # keep the message one line
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{where}'"
    return f"config value '{where}': {first['msg']}"


def load_config(path: str | Path | None = "config.yaml", overrides: list[str] | tuple[str, ...] = (),
                data_dir: str | None = None) -> Config:
    """Read, override, validate. A missing default file means built-in defaults; a named one must exist."""
    raw: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if file.exists():
            try:
                loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
            except yaml.YAMLError as err:
                raise ConfigError(f"{file} is not valid YAML: {' '.join(str(err).split())[:200]}") from None
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"{file} must hold a mapping of settings at the top level")
            raw = loaded or {}
        elif str(path) != "config.yaml":
            raise ConfigError(f"config file '{file}' not found; pass an existing file to --config")
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value)
    if data_dir is not None:
        raw["data_dir"] = data_dir
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err) + (f" in {path}" if path else "")) from None
