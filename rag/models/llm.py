"""Chat model interface: stream text deltas for a list of chat messages.

Backends are chosen by `llm.backend`: `llamacpp` (CPU default: ~6x faster than transformers here),
`transformers` (rag/models/llm_hf.py: hub ids, local paths, the seed's NF4 GPU setup) and `openai` (any
OpenAI-compatible server). A local model writes as many answers at once as it has contexts (llama.cpp)
or replicas (transformers); a `Gate` queues the rest with a visible position and a bounded wait, so one
user never gets another's stream.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from rag.config import LLMConfig
from common.cpu import cores as cpu_cores, runnable_others
from common.errors import BackendError, BusyError, Cancelled
from common.shipped import resolve
from rag.models.gguf_quantize import ensure_quantized

log = logging.getLogger(__name__)
Message = dict[str, str]


def fold_system(messages: list[Message]) -> list[Message]:
    """Move system text into the first user message, for chat templates without a system role
    (Mistral-7B-Instruct-v0.2: "Conversation roles must alternate user/assistant/...")."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return rest
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0


class Gate:
    """First-come-first-served admission to `slots` concurrent generations."""

    def __init__(self, slots: int, max_waiting: int, timeout_s: float):
        self.slots, self.max_waiting, self.timeout_s = slots, max_waiting, timeout_s
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self._busy = 0

    def wait(self, cancel: threading.Event | None = None) -> Iterator[int]:
        """Yields the queue position whenever it changes; returns once admitted (then call `leave`)."""
        ticket = object()
        with self._cond:
            if self._busy < self.slots and not self._queue:
                self._busy += 1
                return
            if len(self._queue) >= self.max_waiting:
                raise BusyError(f"the model is busy with {len(self._queue)} waiting requests; try again shortly")
            self._queue.append(ticket)
        deadline = time.monotonic() + self.timeout_s
        last = -1
        try:
            while True:
                with self._cond:
                    position = self._queue.index(ticket) + 1
                    if position == 1 and self._busy < self.slots:
                        self._queue.popleft()
                        self._busy += 1
                        self._cond.notify_all()   # everyone behind moves up: report it now
                        return
                    if position != last:
                        last = position
                        pending = position
                    else:
                        pending = 0
                        self._cond.wait(timeout=0.25)
                if pending:
                    yield pending
                if cancel is not None and cancel.is_set():
                    raise Cancelled("request cancelled while waiting")
                if time.monotonic() > deadline:
                    raise BusyError(f"waited {self.timeout_s:.0f} s for the model; try again shortly")
        except BaseException:
            with self._cond:
                if ticket in self._queue:
                    self._queue.remove(ticket)
                    self._cond.notify_all()
            raise

    def try_enter(self) -> bool:
        """Admission now if a slot is free and nobody waits, else False (never waits)."""
        with self._cond:
            if self._busy < self.slots and not self._queue:
                self._busy += 1
                return True
            return False

    @contextmanager
    def held(self) -> Iterator[None]:
        """The model for a short job of one's own (a warm-up, a cache reset): waits its turn, then leaves."""
        for _ in self.wait():
            pass
        try:
            yield
        finally:
            self.leave()

    def leave(self) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()


class ChatModel(ABC):
    name: str
    context_length: int
    gate: Gate

    @abstractmethod
    def stream(self, messages: list[Message], settings: GenerationSettings,
               cancel: threading.Event | None = None) -> Iterator[str]:
        """Text deltas as they are generated. Stops early when `cancel` is set."""

    @abstractmethod
    def count_tokens(self, text: str) -> int: ...

    def complete(self, messages: list[Message], settings: GenerationSettings) -> str:
        return "".join(self.stream(messages, settings))

    def prefill(self, messages: list[Message], upto: str, cancel: threading.Event | None = None) -> int:
        """Read the prompt of `messages` up to the last `upto` into the model's cache, so that a request
        whose prompt starts the same way reads only the rest; 0 where a backend keeps no such cache.
        `cancel` stops the reading early (what was read stays). The caller holds the gate."""
        return 0


def llamacpp_contexts(cfg: LLMConfig) -> int:
    """How many answers the llama.cpp backend writes at once (`llm.contexts`; 0: from the machine).

    One context per `n_threads` cores: on this 2-core machine two contexts of one thread decode
    1.9-2.0x the tokens/s of one, while a third or fourth only share the same cores (and more
    threads per context collapse when a core is busy: bench/RESULTS.md, "Concurrency"). Batching
    several sequences in one context gives nothing here (1.05-1.15x at 4): SmolLM2's Q4_1 weights
    have no batched matrix kernel on this CPU, so a step of 4 tokens costs 4 steps of 1. Each
    context holds its own KV cache and compute buffers (~0.2 GiB at n_ctx 4096; the weights are
    memory-mapped once), so auto stops at 4 and at what a quarter of the free memory holds."""
    if cfg.contexts:
        return cfg.contexts
    cores = cpu_cores()
    try:
        free_gib = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError, AttributeError):
        free_gib = 2.0
    per_context_gib = 0.1 + cfg.n_ctx * 24e3 / 2**30    # KV (~23 KB a token), compute buffers, a 2nd mapping
    return max(1, min(4, cores // cfg.n_threads, int(free_gib / 4 / per_context_gib)))


class LlamaCppModel(ChatModel):
    """A small pool of llama.cpp contexts over one memory-mapped model file, one answer per context.

    Each context is a `Llama` of its own (llama.cpp contexts are not thread-safe); the model file is
    mapped, so the weights are in memory once. A request takes the free context whose last prompt
    shares the longest start with its own, so the call mode's read-ahead (`prefill`) and a follow-up
    in the same conversation still read only the new part of their prompt. Every context generates
    exactly as a single one did (same code path, same sampling), so the text does not depend on how
    many others are busy."""

    def __init__(self, cfg: LLMConfig, cache_dir: Path, plan=None):   # `plan`: for GPU backends only
        try:
            from llama_cpp import Llama
        except ImportError as err:
            raise BackendError("llama-cpp-python is not installed; run the setup script, or "
                               "--set llm.backend=transformers") from err
        path = resolve(cfg.model, cache_dir)
        if not Path(path).is_file():
            raise BackendError(f"GGUF model file not found: {path}; set llm.model to a .gguf file")
        if cfg.requantize != "none":
            path = ensure_quantized(path, cfg.requantize, cache_dir)
        n = llamacpp_contexts(cfg)
        try:
            self.contexts = [Llama(model_path=path, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads,
                                   n_threads_batch=cfg.n_threads_batch, verbose=False) for _ in range(n)]
        except (ValueError, RuntimeError) as err:
            raise BackendError(f"llama.cpp could not load {path}: {err}") from err
        self.llm = self.contexts[0]          # tokenizer and chat template: the same in every context
        self.cfg = cfg
        self.name = cfg.model
        self.context_length = cfg.n_ctx
        self._free = list(self.contexts)
        self._free_lock = threading.Lock()
        # One generation per context at a time; the rest queue in order with their position shown.
        self.gate = Gate(n, cfg.max_waiting, cfg.wait_timeout_s)
        log.info("llama.cpp: %d context(s) of %d thread(s) over %s", n, cfg.n_threads, Path(path).name)

    @contextmanager
    def _context(self, tokens: list[int] | None):
        """A free context, the one that already holds the longest start of `tokens`. The caller holds
        the gate, so one is free."""
        with self._free_lock:
            if not self._free:
                raise BackendError("no free llama.cpp context (a caller did not hold the gate)")
            best = max(self._free, key=lambda llm: _keep_score(llm, tokens) if tokens else 0)
            self._free.remove(best)
            alone = len(self._free) == len(self.contexts) - 1
        self._set_prompt_threads(best, alone)
        try:
            yield best
        finally:
            with self._free_lock:
                self._free.append(best)

    def _set_prompt_threads(self, llm, alone: bool) -> None:
        """Read this prompt with `n_threads_batch_idle` threads when it is the only request and no other
        task on the machine wants a core (common/cpu.py says why only then); generation keeps n_threads,
        so a core stays free for speech."""
        cfg, batch = self.cfg, self.cfg.n_threads_batch
        if alone and cfg.n_threads_batch_idle > batch and runnable_others() == 0:
            batch = cfg.n_threads_batch_idle
        if getattr(llm, "_prompt_threads", None) != batch:
            llm._ctx.set_n_threads(cfg.n_threads, batch)
            llm._prompt_threads = batch
        log.debug("prompt threads %d", batch)

    def _tokens(self, messages: list[Message]) -> list[int] | None:
        """The prompt tokens of `messages`, as create_chat_completion will read them; only needed to
        choose between several free contexts."""
        if len(self._free) < 2:
            return None
        formatted = self._formatter(messages=messages)
        return self.llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special,
                                 special=True)

    def stream(self, messages, settings, cancel=None):
        with self._context(self._tokens(messages)) as llm:
            chunks = llm.create_chat_completion(messages=messages, max_tokens=settings.max_new_tokens,
                                                temperature=settings.temperature, stream=True)
            try:
                for chunk in chunks:
                    if cancel is not None and cancel.is_set():
                        return
                    text = chunk["choices"][0]["delta"].get("content")
                    if text:
                        yield text
            finally:
                chunks.close()   # stops generation when the consumer goes away

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def forget_prompts(self) -> None:
        """Drop every free context's cached prompt (benchmarks that compare two ways of asking)."""
        with self._free_lock:
            for llm in self._free:
                llm.reset()

    def prefill(self, messages, upto, cancel=None):
        """llama.cpp keeps the KV state of the last prompt and reuses its longest common prefix on the
        next request (Llama.generate); this evaluates the new prompt's prefix into the free context
        that shares most of it, which the request with the whole prompt will then choose."""
        formatted = self._formatter(messages=messages)
        cut = formatted.prompt.rfind(upto)
        if cut < 0:
            return 0
        tokens = self.llm.tokenize(formatted.prompt[:cut + len(upto)].encode("utf-8"),
                                   add_bos=not formatted.added_special, special=True)
        with self._context(tokens) as llm:
            common = min(_shared_prefix(llm, tokens), len(tokens) - 1)   # keep one token to read: it refreshes the state
            if common > 0 and llm._ctx.kv_cache_seq_rm(-1, common, -1):
                llm.n_tokens = common
            else:
                llm.reset()
            read = tokens[llm.n_tokens:]
            # In slices, so a read-ahead that the user's pause makes moot gives the model back quickly.
            for start in range(0, len(read), PREFILL_SLICE):
                if cancel is not None and cancel.is_set():
                    return start
                llm.eval(read[start:start + PREFILL_SLICE])
            return len(read)

    @cached_property
    def _formatter(self):
        """The chat template llama-cpp-python formats this model's prompts with (its 'chat_template.default')."""
        from llama_cpp import llama_chat_format

        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        return llama_chat_format.Jinja2ChatFormatter(
            template=self.llm.metadata["tokenizer.chat_template"],
            eos_token=self.llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=self.llm._model.token_get_text(bos) if bos != -1 else "", stop_token_ids=[eos])


PREFILL_SLICE = 32      # tokens: ~0.1-0.2 s of prompt reading on one core


def _keep_score(llm, tokens: list[int]) -> float:
    """What taking this context saves, less what it throws away: the shared start is not read again,
    the rest of its cached prompt is lost for a later request. A short prompt of another kind (the
    follow-up rewrite shares only the chat template's first tokens) thus goes to an empty context
    instead of evicting the answer prompt's system part that the next answer would reuse."""
    shared = _shared_prefix(llm, tokens)
    return shared - 0.5 * (llm.n_tokens - shared)


def _shared_prefix(llm, tokens: list[int]) -> int:
    """How many of `tokens` a llama.cpp context's cached prompt already starts with."""
    cached = llm.input_ids[: llm.n_tokens].tolist()
    return next((i for i, (a, b) in enumerate(zip(cached, tokens)) if a != b), min(len(cached), len(tokens)))


class OpenAIModel(ChatModel):
    """Any OpenAI-compatible server: vLLM, TGI, llama.cpp server, Ollama."""

    def __init__(self, cfg: LLMConfig, cache_dir: Path, plan=None):   # `plan`: for GPU backends only
        from openai import OpenAI

        if not cfg.base_url:
            raise BackendError("llm.base_url is not set; point it at the server, e.g. http://127.0.0.1:8000/v1")
        self.client = OpenAI(base_url=cfg.base_url, api_key=os.environ.get(cfg.api_key_env) or "unused",
                             timeout=cfg.timeout_s, max_retries=0)
        self.base_url = cfg.base_url
        self.name = cfg.model
        self.context_length = cfg.n_ctx
        self.timeout_s = cfg.timeout_s
        # The server batches; we only bound how many streams we hold open at once.
        self.gate = Gate(max(cfg.max_waiting, 1), cfg.max_waiting, cfg.wait_timeout_s)

    def _create(self, messages, settings):
        import openai

        kwargs = dict(model=self.name, stream=True, max_tokens=settings.max_new_tokens,
                      temperature=settings.temperature)
        try:
            return self.client.chat.completions.create(messages=messages, **kwargs)
        except openai.BadRequestError as err:
            # Some chat templates have no system role; the server's template raises. Fold and retry once.
            text = str(err.message).lower()
            if any(m["role"] == "system" for m in messages) and ("alternate" in text or "system" in text):
                return self.client.chat.completions.create(messages=fold_system(messages), **kwargs)
            raise

    def stream(self, messages, settings, cancel=None):
        import openai

        try:
            response = self._create(messages, settings)
            finish = None
            try:
                for chunk in response:
                    if cancel is not None and cancel.is_set():
                        return
                    if chunk.choices:
                        finish = chunk.choices[0].finish_reason or finish
                        if chunk.choices[0].delta.content:
                            yield chunk.choices[0].delta.content
            finally:
                response.close()   # closes the HTTP stream: the server stops generating
            if finish is None:
                # The stream ended without saying why: the answer was cut short. llama-cpp-python's
                # server does this to a running stream whenever another request arrives.
                raise BackendError(f"the model server at {self.base_url} ended the answer early (no finish_reason); "
                                   "if it is llama-cpp-python's server, start it with --interrupt_requests false")
        except openai.APITimeoutError:
            raise BackendError(f"the model server at {self.base_url} did not answer within "
                               f"{self.timeout_s:g} s (llm.timeout_s)") from None
        except openai.APIConnectionError:
            raise BackendError(f"cannot reach the model server at {self.base_url}; is it running?") from None
        except openai.APIStatusError as err:
            raise BackendError(f"the model server at {self.base_url} answered HTTP {err.status_code}: "
                               f"{' '.join(str(err.message).split())[:160]}") from None
        except openai.APIError as err:   # an error event inside the stream
            raise BackendError(f"the model server at {self.base_url} failed: "
                               f"{' '.join(str(err.message).split())[:160]}") from None

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)   # no tokenizer for a remote model: ~4 characters per token
