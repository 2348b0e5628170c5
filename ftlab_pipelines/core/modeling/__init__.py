"""Base models: resolution (alias, dir, hub id, GGUF), device and dtype, LoRA, quantization, merge."""
