"""GGUF export of SO8T models for stock llama.cpp.

Modules: ``names`` (HF -> GGUF text tensor table), ``tokenizer`` (tokenizer metadata), ``quant`` (quant
type registry, encoders, llama.cpp's quantizer), ``metadata`` (``so8t.*`` keys, content hash), ``text``
(the ``qwen2vl`` text file writer), ``export`` (``SO8TToGGUFConverter``: text + mmproj + sidecar),
``vision`` (mmproj), ``sidecar`` (gates and safety head) and ``parity`` (llama.cpp-vs-PyTorch logit bounds).
"""
