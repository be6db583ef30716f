"""One way to pick a backend by name: a table of name -> "module:attribute", imported only when chosen.

Each engine package keeps its table in a module of its own (asr/registry.py, tts/registry.py,
rag/index/registry.py, rag/models/registry.py), apart from the base class its backends import, so a
base never imports its backends and no optional dependency (ctranslate2, psycopg, qdrant-client,
transformers) loads until a config names it.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from common.errors import BackendError


def backend(table: Mapping[str, str], setting: str, name: str) -> Any:
    """The attribute `table[name]` names; a BackendError naming `setting` and the choices if unknown."""
    target = table.get(name)
    if target is None:
        raise BackendError(f"unknown {setting} '{name}'; use one of: {', '.join(table)}")
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)
