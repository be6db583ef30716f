"""Speech to text with the original `openai-whisper` package (the seed project's engine), kept optional.

The package pulls in torch and is not installed by default; it is imported only when this backend is
chosen. Its weights are .pt files: `asr.model` is a path to one, or a name ("tiny.en", "base") that
openai-whisper looks up as <download_root>/<name>.pt (default ~/.cache/whisper). A missing file would
make it download, which fails offline, so the file is checked first and named in the error.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from asr.base import Transcriber
from common.errors import BackendError

if TYPE_CHECKING:
    from asr.config import ASRConfig

log = logging.getLogger(__name__)
_INSTALL = "pip install openai-whisper"


def default_download_root() -> Path:
    """Where openai-whisper itself looks for named weights."""
    return Path(os.getenv("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"


def weights_path(spec: str) -> tuple[str, Path]:
    """(name given to whisper.load_model, the .pt file that must exist)."""
    if spec.startswith("shipped:whisper-"):
        # The shipped models are CTranslate2 folders; the same size's .pt is the openai-whisper equivalent.
        spec = spec.removeprefix("shipped:whisper-")
    path = Path(spec).expanduser()
    if path.suffix == ".pt" or os.sep in spec:
        return str(path), path
    return spec, default_download_root() / f"{spec}.pt"


class OpenAIWhisperTranscriber(Transcriber):
    name = "openai-whisper"

    def __init__(self, cfg: ASRConfig, cache_dir: Path, threads: int = 2):
        super().__init__(max_audio_s=cfg.max_audio_s)
        name, pt = weights_path(cfg.model)
        try:
            import whisper
        except ImportError:
            raise BackendError(f"asr.backend openai-whisper needs the openai-whisper package, which is not "
                               f"installed; run `{_INSTALL}` and put the weights at {pt}, or use "
                               f"asr.backend faster-whisper") from None
        if not pt.is_file():
            raise BackendError(f"openai-whisper weights not found at {pt}; copy the .pt file there or set "
                               f"asr.model to its path (this machine cannot download them)")
        allowed = cfg.allowed_languages()   # detection here is not limited to a list: one entry fixes it
        self.language = allowed[0] if allowed and len(allowed) == 1 else None
        self.beam_size = cfg.beam_size
        self.temperature = cfg.temperature()    # one greedy pass unless asked (asr/config.py says why)
        device = cfg.device
        if device == "auto":
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if device == "cpu":
            import torch
            torch.set_num_threads(max(1, threads))
        try:
            self.model = whisper.load_model(str(pt), device=device)
        except Exception as err:
            raise BackendError(f"could not load openai-whisper weights {pt} on {device}: "
                               f"{' '.join(str(err).split())[:160]}; check the file and asr.device") from err
        self._whisper = whisper
        log.info("openai-whisper loaded %s (%s) on %s", name, pt, device)

    def _transcribe_samples(self, samples: np.ndarray) -> tuple[str, str]:
        # whisper.transcribe takes the float32 16 kHz array and windows >30 s audio itself.
        options = dict(language=self.language, fp16=self.device.startswith("cuda"), verbose=None,
                       temperature=self.temperature)
        if self.beam_size > 1:  # None means greedy decoding, the fast path for beam 1
            options["beam_size"] = self.beam_size
        result = self._whisper.transcribe(self.model, samples, **options)
        return str(result.get("text", "")), str(result.get("language") or self.language or "")
