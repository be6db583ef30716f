"""Where the chat model, the embedder and Whisper go: a pure planner over described GPUs.

`plan_placement` is plain arithmetic on `GpuInfo`s, so every decision can be tested without a GPU:

- no GPUs: everything on the CPU;
- the model plus its KV-cache headroom fits on one GPU: one replica on every GPU that can hold it,
  each request routed to the least-busy replica (no DataParallel: that is a training tool, and it
  would copy the weights on every forward pass);
- otherwise: one copy split layer by layer across the GPUs (transformers `device_map="auto"` with a
  `max_memory` cap per GPU, leaving headroom on each for the KV cache of the layers it holds);
- the embedder, then Whisper, go to the GPU with the most memory left after that, or the CPU when
  nothing is left.

`detect_gpus()` is the only function here that looks at the machine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rag.errors import BackendError

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
    mode: Literal["cpu", "replicas", "split"]
    model_gib: float
    headroom_gib: float
    replicas: tuple[str, ...]                          # one device per model copy; "split": its first GPU
    max_memory_gib: tuple[tuple[int, float], ...] = () # split only: GPU ordinal -> cap for weights
    embedder_device: str = "cpu"
    whisper_device: str = "cpu"
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
        lines = []
        if self.mode == "cpu":
            lines.append(f"placement: CPU only (no GPU); model ~{self.model_gib:.2f} GiB in RAM")
        elif self.mode == "replicas":
            lines.append(f"placement: {self.n_replicas} replica(s) of the model (~{self.model_gib:.2f} GiB "
                         f"+ {self.headroom_gib:.1f} GiB KV headroom each) on {', '.join(self.replicas)}; "
                         "each request goes to the least-busy replica")
        else:
            caps = ", ".join(f"cuda:{i} <= {gib:.1f} GiB" for i, gib in self.max_memory_gib)
            lines.append(f"placement: one copy of the model (~{self.model_gib:.2f} GiB) split across "
                         f"{len(self.max_memory_gib)} GPUs with device_map=auto, max_memory {caps}")
        for gpu in self.gpus:
            left = dict(self.free_after_gib).get(gpu.device)
            lines.append(f"  {gpu.device} {gpu.name}: {gpu.total_gib:.1f} GiB total, {gpu.free_gib:.1f} GiB free"
                         + (f", ~{left:.1f} GiB left after placement" if left is not None else ""))
        lines.append(f"  embedder -> {self.embedder_device}; whisper -> {self.whisper_device}")
        return lines


def estimate_model_gib(n_params_billion: float, quantization: str = "nf4") -> float:
    """Weights only: NF4 ~0.55 bytes/parameter including overhead, bf16/fp16 2, fp32 4."""
    try:
        per_param = BYTES_PER_PARAM[quantization]
    except KeyError:
        raise ValueError(f"unknown quantization '{quantization}'; known: {', '.join(BYTES_PER_PARAM)}") from None
    return n_params_billion * 1e9 * per_param / GIB


def _place_small(name_gib: float, left: dict[str, float]) -> str:
    """The GPU with the most memory left, when the component fits there; else the CPU."""
    if not left:
        return "cpu"
    device = max(left, key=lambda d: (left[d], -int(d.split(":")[1])))
    if left[device] >= name_gib:
        left[device] -= name_gib
        return device
    return "cpu"


def plan_placement(gpus: list[GpuInfo], model_gib: float, embedder_gib: float = EMBEDDER_GIB,
                   whisper_gib: float = WHISPER_GIB, headroom_gib: float = DEFAULT_HEADROOM_GIB) -> Plan:
    """Decide the placement; raises PlacementError when the model fits on no combination of GPUs."""
    if model_gib <= 0:
        raise ValueError("model_gib must be positive")
    gpus = tuple(g if g.index is not None else GpuInfo(g.name, g.total_gib, g.free_gib, i)
                 for i, g in enumerate(gpus))
    if not gpus:
        return Plan("cpu", model_gib, 0.0, ("cpu",))

    need = model_gib + headroom_gib
    left = {g.device: g.free_gib for g in gpus}
    holders = [g for g in gpus if g.free_gib >= need]
    if holders:
        for g in holders:
            left[g.device] -= need
        mode, replicas, caps = "replicas", tuple(g.device for g in holders), ()
    else:
        # Split: every GPU keeps `headroom_gib` for the KV cache of its layers; weights are balanced
        # across the rest (water-filling: an even share, capped by what each GPU can hold).
        budgets = {g.index: max(0.0, g.free_gib - headroom_gib) for g in gpus}
        usable = {i: b for i, b in budgets.items() if b > 0}
        if sum(usable.values()) < model_gib:
            have = ", ".join(f"{g.device} {g.free_gib:.1f} GiB free" for g in gpus)
            raise PlacementError(
                f"the model needs ~{model_gib:.1f} GiB of GPU memory plus {headroom_gib:.1f} GiB headroom per GPU, "
                f"but the GPUs have only {have}; use llm.quantization: nf4, a smaller model, more GPUs, "
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
        for g in gpus:
            if g.index in use and use[g.index] > 0:
                left[g.device] -= use[g.index] + headroom_gib
        caps = tuple((i, round(b, 2)) for i, b in usable.items())
        first = min(i for i in use if use[i] > 0)
        mode, replicas = "split", (f"cuda:{first}",)

    embedder_device = _place_small(embedder_gib, left)
    whisper_device = _place_small(whisper_gib, left)
    return Plan(mode, model_gib, headroom_gib, replicas, caps, embedder_device, whisper_device,
                tuple((d, round(v, 2)) for d, v in left.items()), gpus)


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
