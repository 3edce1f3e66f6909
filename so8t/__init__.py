"""so8t: convert Qwen2-VL to SO8T and ship it as GGUF that stock llama.cpp runs.

Public API (plain functions, each with Args/Returns/Example; defined in ``so8t.api``, imported lazily so
``import so8t`` loads neither torch nor llama.cpp)::

    so8t.convert(input_model, output_model, ...)        Qwen2-VL -> SO8T checkpoint
    so8t.train(so8t_model, train_data, output_model, ...) train the gates and the safety head
    so8t.export_gguf(so8t_model, output, ...)           GGUF text + mmproj + sidecar for llama.cpp
    so8t.validate(gguf_model, so8t_model, ...)           the validator's report
    so8t.run(model, prompt, ...)                          greedy generation + safety verdict
    so8t.run_pipeline(input_model, output_dir, ...)      all of the above in one go

Layout (the folder tree is the architecture):

- ``so8t.group`` / ``so8t.gates``: SO(8) maths and the gate modules.
- ``so8t.checkpoint``: streaming reader of Hugging Face Qwen2-VL checkpoints.
- ``so8t.conversion`` / ``so8t.model`` / ``so8t.fold``: Qwen2-VL -> SO8T, the SO8T model, burn-in.
- ``so8t.training``: training of the gates and the safety head.
- ``so8t.adapters``: the only place that knows Qwen2-VL tensor names.
- ``so8t.gguf``: GGUF export (text, mmproj, sidecar, quant types).
- ``so8t.llama.runtime`` / ``so8t.llama.runner`` / ``so8t.validation`` / ``so8t.pipeline``: llama.cpp runtime, one
  prompt through it, validator, pipeline.
- ``so8t.testing``: the embedded default checkpoint (built deterministically, no downloads).
- ``so8t.cli``: the ``so8t`` command (through the functions above).

The module names differ from the function names on purpose: importing a submodule sets an attribute of
the package, so a submodule ``so8t/convert.py`` would replace the function ``so8t.convert``.
"""

__version__ = "0.1.0"

from so8t.api import convert, export_gguf, run, run_pipeline, train, validate

__all__ = ["__version__", "convert", "export_gguf", "run", "run_pipeline", "train", "validate"]
