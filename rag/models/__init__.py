"""The model engines of the text side: chat models (llama.cpp, transformers, OpenAI-compatible), the
embedder, and the placement plan that decides where each model runs."""
