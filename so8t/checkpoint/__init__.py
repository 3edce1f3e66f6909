"""Reading Hugging Face Qwen2-VL checkpoints (safetensors only, streamed, validated on open).

Public API:
    CheckpointReader(path)        validated streaming view; canonical hub tensor names
    names.to_hub / to_transformers5   the two tensor-name spellings (a data table)
    config.text_config / vision_config   normalised hyper-parameters from either config.json spelling
"""

from so8t.checkpoint.reader import CheckpointReader

__all__ = ["CheckpointReader"]
