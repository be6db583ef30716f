"""Chat-model backends by name (`llm.backend`), each imported only when chosen: transformers and torch
load only for `llm.backend: transformers`, the openai client only for `openai`."""
from __future__ import annotations

from pathlib import Path

from common.registry import backend
from rag.config import LLMConfig
from rag.models.llm import ChatModel

CHAT_MODELS = {
    "llamacpp": "rag.models.llm:LlamaCppModel",
    "transformers": "rag.models.llm_hf:TransformersModel",
    "openai": "rag.models.llm:OpenAIModel",
}


def load_chat_model(cfg: LLMConfig, cache_dir: Path, plan=None) -> ChatModel:
    """`plan`: the placement (rag.models.placement.Plan) Engines decided; only the transformers backend
    places weights on GPUs, and without a plan it makes one for the model alone."""
    return backend(CHAT_MODELS, "llm.backend", cfg.backend)(cfg, Path(cache_dir), plan)
