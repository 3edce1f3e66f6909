"""so8t: convert Qwen2-VL to SO8T and ship it as GGUF that stock llama.cpp runs.

Layout (the folder tree is the architecture):

- ``so8t.group`` / ``so8t.gates``: SO(8) maths and the gate modules.
- ``so8t.checkpoint``: streaming reader of Hugging Face Qwen2-VL checkpoints.
- ``so8t.conversion`` / ``so8t.model`` / ``so8t.fold``: Qwen2-VL -> SO8T, the SO8T model, burn-in.
- ``so8t.adapters``: the only place that knows Qwen2-VL tensor names.
- ``so8t.gguf``: GGUF export (text, mmproj, sidecar, quant types).
- ``so8t.runtime`` / ``so8t.validation`` / ``so8t.pipeline``: llama.cpp runtime, validator, pipeline.
- ``so8t.testing``: the embedded default checkpoint (built deterministically, no downloads).
- ``so8t.cli``: the ``so8t`` command.
"""

__version__ = "0.1.0"
