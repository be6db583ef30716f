"""Where the chat model, the embedder and Whisper go: a pure planner over described GPUs.

`plan_placement` is plain arithmetic on `GpuInfo`s, so every decision can be tested without a GPU:

- no GPUs: everything on the CPU;
- the model plus its KV-cache headroom fits on one GPU: one replica on every GPU that can hold it,
  each request routed to the least-busy replica (no DataParallel: that is a training tool, and it
  would copy the weights on every forward pass);
- otherwise: one copy split layer by layer across the GPUs (transformers `device_map="auto"` with a
  `max_memory` cap per GPU, leaving headroom on each for the KV cache of the layers it holds);
- the embedder, then Whisper, go to the GPU with the most memory left after that, or the CPU when
  nothing is left; a component pinned to a device (`embeddings.device: cuda:1`) stays there and its
  memory is counted first.

`plan_engines(cfg, cache_dir)` is the one path from a `Config` to a `Plan` (Engines and a standalone
transformers model both use it); `apply_plan` turns every `auto` device in the config into the plan's
choice. `detect_gpus()` is the only function here that looks at the machine: tests stub it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from common.errors import BackendError

if TYPE_CHECKING:
    from collections.abc import Callable

    from rag.config import Config, LLMConfig

GIB = 1024 ** 3
# Bytes per parameter, including the small extras (NF4: absmax/double-quant constants, the
# un-quantized embeddings, norms and lm_head in 16 bits).
BYTES_PER_PARAM = {"nf4": 0.55, "int8": 1.1, "bf16": 2.0, "fp16": 2.0, "none": 2.0, "fp32": 4.0}
DEFAULT_HEADROOM_GIB = 1.5      # KV cache (Mistral-7B: 0.5 GiB per 4096-token sequence) + activations + CUDA context
EMBEDDER_GIB = 0.6              # all-mpnet-base-v2 in float32 with a batch in flight
WHISPER_GIB = 0.5               # faster-whisper base in float16 with its working buffers


class PlacementError(BackendError):
    """The model does not fit on the GPUs (or the CPU plan is impossible)."""


@dataclass(frozen=True)
class GpuInfo:
    name: str
    total_gib: float
    free_gib: float
    index: int | None = None     # CUDA ordinal; None: the position in the list given to the planner

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"


@dataclass(frozen=True)
class Plan:
    mode: Literal["cpu", "replicas", "split", "server"]   # server: the LLM runs elsewhere (llm.backend openai)
    model_gib: float                                   # 0: not estimated (the model is not on a GPU)
    headroom_gib: float
    replicas: tuple[str, ...]                          # one device per model copy; "split": its first GPU
    max_memory_gib: tuple[tuple[int, float], ...] = () # split only: GPU ordinal -> cap for weights
    embedder_device: str = "cpu"
    whisper_device: str = "cpu"
    whisper_compute_type: str = "int8"
    free_after_gib: tuple[tuple[str, float], ...] = () # estimated GiB left on each GPU
    gpus: tuple[GpuInfo, ...] = field(default=(), repr=False)

    @property
    def n_replicas(self) -> int:
        return len(self.replicas)

    @property
    def max_memory(self) -> dict[int, str]:
        """The `max_memory` argument for `from_pretrained` (split only)."""
        return {i: f"{gib:.2f}GiB" for i, gib in self.max_memory_gib}

    def load_kwargs(self, replica: int) -> dict:
        """`device_map`/`max_memory` for `from_pretrained` of replica `replica`."""
        if self.mode == "cpu":
            return {"device_map": {"": "cpu"}}
        if self.mode == "replicas":
            return {"device_map": {"": self.replicas[replica]}}
        return {"device_map": "auto", "max_memory": self.max_memory}

    def describe(self) -> list[str]:
        """The whole plan, one line per decision, for the start-up log."""
        if self.mode == "cpu" and not self.gpus:
            lines = ["placement: CPU only (no GPU in use): the chat model, if local, runs on the CPU"
                     + (f"; chat model ~{self.model_gib:.2f} GiB in RAM" if self.model_gib else "")]
        elif self.mode == "cpu":
            lines = ["placement: chat model on the CPU (llm.device cpu, or a CPU backend); "
                     "the GPUs hold only what is placed below"]
        elif self.mode == "server":
            lines = ["placement: chat model served by another process (llm.backend openai); none of it here"]
        elif self.mode == "replicas":
            lines = [f"placement: {self.n_replicas} replica(s) of the chat model (~{self.model_gib:.2f} GiB "
                     f"+ {self.headroom_gib:.1f} GiB KV headroom each) on {', '.join(self.replicas)}; "
                     "each request goes to the least-busy replica"]
        else:
            caps = ", ".join(f"cuda:{i} <= {gib:.1f} GiB" for i, gib in self.max_memory_gib)
            lines = [f"placement: one copy of the chat model (~{self.model_gib:.2f} GiB) split across "
                     f"{len(self.max_memory_gib)} GPUs with device_map=auto, max_memory {caps}"]
        lines.append(f"  embedder -> {self.embedder_device}")
        lines.append(f"  whisper -> {self.whisper_device} ({self.whisper_compute_type})")
        for gpu in self.gpus:
            left = dict(self.free_after_gib).get(gpu.device)
            lines.append(f"  {gpu.device} {gpu.name}: {gpu.total_gib:.1f} GiB total, {gpu.free_gib:.1f} GiB free"
                         + (f", ~{left:.1f} GiB left after placement" if left is not None else ""))
        return lines


def estimate_model_gib(n_params_billion: float, quantization: str = "nf4") -> float:
    """Weights only: NF4 ~0.55 bytes/parameter including overhead, bf16/fp16 2, fp32 4."""
    try:
        per_param = BYTES_PER_PARAM[quantization]
    except KeyError:
        raise ValueError(f"unknown quantization '{quantization}'; known: {', '.join(BYTES_PER_PARAM)}") from None
    return n_params_billion * 1e9 * per_param / GIB


def _gpu_name(device: str) -> str:
    """`cuda` means the current (first) GPU, as torch and CTranslate2 read it."""
    return "cuda:0" if device == "cuda" else device


def _place_small(gib: float, left: dict[str, float], allowed: Sequence[str] | None = None) -> str:
    """The GPU (of `allowed`) with the most memory left, when the component fits there; else the CPU."""
    room = {d: v for d, v in left.items() if allowed is None or d in allowed}
    if not room:
        return "cpu"
    device = max(room, key=lambda d: (room[d], -int(d.split(":")[1])))
    if room[device] >= gib:
        left[device] -= gib
        return device
    return "cpu"


def plan_placement(gpus: list[GpuInfo], model_gib: float, embedder_gib: float = EMBEDDER_GIB,
                   whisper_gib: float = WHISPER_GIB, headroom_gib: float = DEFAULT_HEADROOM_GIB, *,
                   llm_gpus: Sequence[int] | None = None, llm_server: bool = False,
                   embedder_device: str = "auto", whisper_device: str = "auto", whisper_compute: str = "auto",
                   whisper_gpus: Sequence[int] | None = None) -> Plan:
    """Decide the placement; raises PlacementError when the model fits on no combination of GPUs.

    `llm_gpus`: the ordinals the chat model may use (None: all; empty: it stays on the CPU);
    `llm_server`: it runs in another process. `embedder_device`/`whisper_device`: `auto`, or a pinned
    device that is kept. `whisper_gpus`: the ordinals `auto` may give Whisper (None: all).
    """
    if model_gib < 0:
        raise ValueError("model_gib must not be negative")
    gpus = tuple(g if g.index is not None else GpuInfo(g.name, g.total_gib, g.free_gib, i)
                 for i, g in enumerate(gpus))
    left = {g.device: g.free_gib for g in gpus}
    for pinned, gib in ((embedder_device, embedder_gib), (whisper_device, whisper_gib)):
        if pinned != "auto" and _gpu_name(pinned) in left:   # a pinned component's memory is taken first
            left[_gpu_name(pinned)] -= gib
    on = [g for g in gpus if llm_gpus is None or g.index in llm_gpus]

    caps: tuple[tuple[int, float], ...] = ()
    if llm_server:
        mode, replicas = "server", ()
    elif not on:
        mode, replicas = "cpu", ("cpu",)
    else:
        if model_gib <= 0:
            raise ValueError("model_gib must be positive for a model placed on GPUs")
        need = model_gib + headroom_gib
        holders = [g for g in on if left[g.device] >= need]
        if holders:
            for g in holders:
                left[g.device] -= need
            mode, replicas = "replicas", tuple(g.device for g in holders)
        else:
            # Split: every GPU keeps `headroom_gib` for the KV cache of its layers; weights are balanced
            # across the rest (water-filling: an even share, capped by what each GPU can hold).
            usable = {g.index: left[g.device] - headroom_gib for g in on if left[g.device] > headroom_gib}
            if sum(usable.values()) < model_gib:
                have = ", ".join(f"{g.device} {left[g.device]:.1f} GiB free" for g in on)
                raise PlacementError(
                    f"the model needs ~{model_gib:.1f} GiB of GPU memory plus {headroom_gib:.1f} GiB headroom per "
                    f"GPU, but the GPUs have only {have}; use llm.quantization: nf4, a smaller model, more GPUs, "
                    "or serve it elsewhere with llm.backend: openai")
            use = dict.fromkeys(usable, 0.0)
            remaining = model_gib
            while remaining > 1e-9:
                open_ = [i for i in usable if usable[i] - use[i] > 1e-9]
                if not open_:
                    break
                share = remaining / len(open_)
                for i in open_:
                    take = min(share, usable[i] - use[i])
                    use[i] += take
                    remaining -= take
            for g in on:
                if use.get(g.index, 0) > 0:
                    left[g.device] -= use[g.index] + headroom_gib
            caps = tuple((i, round(b, 2)) for i, b in usable.items())
            mode, replicas = "split", (f"cuda:{min(i for i in use if use[i] > 0)}",)

    if embedder_device == "auto":
        embedder_device = _place_small(embedder_gib, left)
    if whisper_device == "auto":
        allowed = None if whisper_gpus is None else [f"cuda:{i}" for i in whisper_gpus]
        whisper_device = _place_small(whisper_gib, left, allowed)
    if whisper_compute == "auto":
        # float16 is the fast path on GPUs; int8 is what the CPU timings in MODELS.md were measured with.
        whisper_compute = "float16" if whisper_device.startswith("cuda") else "int8"
    return Plan(mode, model_gib, headroom_gib, replicas, caps, embedder_device, whisper_device, whisper_compute,
                tuple((d, round(v, 2)) for d, v in left.items()), gpus)


def gpus_for(gpus: list[GpuInfo], device: str, key: str) -> list[GpuInfo]:
    """The GPUs a `device` setting allows: none for cpu; all for auto/cuda; the one named by cuda:N.
    A GPU setting with no such GPU visible is an error naming `key`; auto without GPUs is the CPU."""
    device = device.strip().lower()
    if device == "cpu":
        return []
    chosen = gpus
    if device.startswith("cuda:"):
        chosen = [g for g in gpus if g.index == int(device.split(":", 1)[1])]
    if not chosen and device != "auto":
        raise PlacementError(f"{key} is '{device}' but no such CUDA GPU is visible; set {key}: auto (or cpu)")
    return chosen


def plan_engines(cfg: Config, cache_dir: Path | str,
                 model_gib: Callable[[LLMConfig, Path], float] | None = None) -> Plan:
    """The plan for a whole configuration: the GPUs are measured only when some device asks for one,
    and the chat model's size is estimated only when it may go on a GPU, by `model_gib` (the backend's
    own estimate, rag/models/llm_hf.py `model_gib`: the planner knows no model backend)."""
    llm, emb, asr = cfg.llm, cfg.embeddings, cfg.asr
    # llama.cpp runs on the CPU here (no GPU layers); the openai backend's model lives in its server.
    llm_device = llm.device if llm.backend == "transformers" else "cpu"
    gpus = detect_gpus() if any(d != "cpu" for d in (llm_device, emb.device, asr.device)) else []
    if gpus and llm.gpu_max_memory_gib:   # user caps, e.g. {"0": 14, "1": 14} or {"cuda:0": 14}
        caps = {str(k).removeprefix("cuda:"): v for k, v in llm.gpu_max_memory_gib.items()}
        gpus = [GpuInfo(g.name, g.total_gib, min(g.free_gib, caps.get(str(g.index), g.free_gib)), g.index)
                for g in gpus]
    llm_on = gpus_for(gpus, llm_device, "llm.device")
    gpus_for(gpus, emb.device, "embeddings.device")   # only to fail early on a pin that cannot be met
    gpus_for(gpus, asr.device, "asr.device")
    size_gib = 0.0
    if llm_on:
        if model_gib is None:
            raise ValueError("plan_engines needs model_gib to place a chat model on a GPU")
        size_gib = model_gib(llm, Path(cache_dir))
    # asr/ turns "cuda:N" into CTranslate2's device="cuda", device_index=N, so Whisper may go on any GPU.
    return plan_placement(gpus, size_gib, llm_gpus=[g.index for g in llm_on], llm_server=llm.backend == "openai",
                          embedder_device=emb.device, whisper_device=asr.device, whisper_compute=asr.compute_type)


def apply_plan(cfg: Config, plan: Plan) -> Config:
    """`cfg` with every `auto` device (and Whisper's `auto` compute type) replaced by the plan's choice."""
    emb, asr = cfg.embeddings, cfg.asr
    whisper_device = plan.whisper_device
    update = {}
    if emb.device == "auto":
        update["embeddings"] = emb.model_copy(update={"device": plan.embedder_device})
    if asr.device == "auto" or asr.compute_type == "auto":
        update["asr"] = asr.model_copy(update={
            "device": whisper_device if asr.device == "auto" else asr.device,
            "compute_type": plan.whisper_compute_type})
    if cfg.llm.device == "auto" and plan.mode in ("cpu", "server"):
        update["llm"] = cfg.llm.model_copy(update={"device": "cpu"})
    return cfg.model_copy(update=update) if update else cfg


def detect_gpus() -> list[GpuInfo]:
    """The visible CUDA GPUs with their total and currently free memory; [] without CUDA."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    found = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        found.append(GpuInfo(torch.cuda.get_device_name(i), total / GIB, free / GIB, i))
    return found
