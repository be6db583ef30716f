"""The base of every config section, shared by rag/, asr/ and tts/ so each package owns its own section.

Frozen (a loaded config never changes under a running request) and strict (an unknown key is an
error that names it, not a setting silently ignored). rag/config.py composes the sections.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Where a model runs; a typo ("cude") is a config error rather than a failure deep inside a loader.
DEVICE_PATTERN = r"^(cpu|auto|cuda(:[0-9]+)?)$"
