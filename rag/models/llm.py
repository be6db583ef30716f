"""Chat model interface: stream text deltas for a list of chat messages.

Backends are chosen by `llm.backend`: `llamacpp` (CPU default: ~6x faster than transformers here),
`transformers` (rag/models/llm_hf.py: hub ids, local paths, the seed's NF4 GPU setup) and `openai` (any
OpenAI-compatible server). A local model runs one generation at a time; a `Gate` queues the rest
with a visible position and a bounded wait, so one user never gets another's stream.
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
from common.errors import BackendError, BusyError, Cancelled
from common.shipped import resolve

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

    def prefill(self, messages: list[Message], upto: str) -> int:
        """Read the prompt of `messages` up to the last `upto` into the model's cache, so that a request
        whose prompt starts the same way reads only the rest; 0 where a backend keeps no such cache.
        The caller holds the gate."""
        return 0


class LlamaCppModel(ChatModel):
    def __init__(self, cfg: LLMConfig, cache_dir: Path, plan=None):   # `plan`: for GPU backends only
        try:
            from llama_cpp import Llama
        except ImportError as err:
            raise BackendError("llama-cpp-python is not installed; run the setup script, or "
                               "--set llm.backend=transformers") from err
        path = resolve(cfg.model, cache_dir)
        if not Path(path).is_file():
            raise BackendError(f"GGUF model file not found: {path}; set llm.model to a .gguf file")
        try:
            self.llm = Llama(model_path=path, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads,
                             n_threads_batch=cfg.n_threads_batch, verbose=False)
        except (ValueError, RuntimeError) as err:
            raise BackendError(f"llama.cpp could not load {path}: {err}") from err
        self.name = cfg.model
        self.context_length = cfg.n_ctx
        # llama.cpp contexts are not thread-safe: one generation at a time, the rest queue.
        self.gate = Gate(1, cfg.max_waiting, cfg.wait_timeout_s)

    def stream(self, messages, settings, cancel=None):
        chunks = self.llm.create_chat_completion(messages=messages, max_tokens=settings.max_new_tokens,
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

    def prefill(self, messages, upto):
        """llama.cpp keeps the KV state of the last prompt and reuses its longest common prefix on the
        next request (Llama.generate); this evaluates the new prompt's prefix into that state now."""
        formatted = self._formatter(messages=messages)
        cut = formatted.prompt.rfind(upto)
        if cut < 0:
            return 0
        tokens = self.llm.tokenize(formatted.prompt[:cut + len(upto)].encode("utf-8"),
                                   add_bos=not formatted.added_special, special=True)
        cached = self.llm.input_ids[: self.llm.n_tokens].tolist()
        common = next((i for i, (a, b) in enumerate(zip(cached, tokens)) if a != b), min(len(cached), len(tokens)))
        common = min(common, len(tokens) - 1)       # keep one token to read: it refreshes the state
        if common > 0 and self.llm._ctx.kv_cache_seq_rm(-1, common, -1):
            self.llm.n_tokens = common
        else:
            self.llm.reset()
        read = tokens[self.llm.n_tokens:]
        self.llm.eval(read)
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
