"""Is the speaker done? The Smart Turn v3.2 model's probability that a turn is complete.

Silence alone cannot tell "When was the library ... founded?" from "When was the library founded?":
both stop. Smart Turn (pipecat-ai/smart-turn-v3, BSD-2-Clause; the 8.7 MB ONNX file inside the
pipecat-ai 1.14.0 wheel, see common/shipped.py) reads the last 8 s of the turn's audio, prosody
included, and says how likely the speaker has finished. A turn the model calls complete can end after
a short silence; one it calls unfinished waits longer (asr/turns.py).

Its input is Whisper's 80-bin log-mel of exactly 8 s (zeros in front of a shorter turn) after a zero
mean, unit variance normalisation of the waveform; faster-whisper's feature extractor computes the
same log-mel as the package's own numpy code (largest difference 4e-7), so nothing of pipecat is
imported, only its model file is read.
"""
from __future__ import annotations

import numpy as np

RATE = 16_000
SECONDS = 8


class SmartTurn:
    def __init__(self, model_path: str, threads: int = 1):
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads      # one short run per pause: one core is plenty (~60 ms)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])
        self._features = FeatureExtractor(feature_size=80)

    def complete(self, audio: np.ndarray) -> float:
        """Probability (0-1) that the speech in `audio` (16 kHz mono float32, the turn so far, ending in
        the silence that made us ask) is a finished turn."""
        audio = np.asarray(audio, np.float32).reshape(-1)[-SECONDS * RATE:]
        audio = np.pad(audio, (SECONDS * RATE - audio.size, 0))
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        features = self._features(audio, padding=0)[:, : SECONDS * RATE // 160].astype(np.float32)
        out = self._session.run(None, {"input_features": features[None]})
        return float(np.asarray(out[0]).reshape(-1)[0])
