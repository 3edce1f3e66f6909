"""Reading Hugging Face Qwen2-VL checkpoints (safetensors only, streamed)."""
