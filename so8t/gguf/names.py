"""The text GGUF's tensor inventory: the Qwen2-VL text tensors under llama.cpp's ``qwen2vl`` names.

Derived from the one table of Qwen2-VL tensor facts (``so8t.adapters.qwen2vl.TENSORS``: hub name, shape in
config symbols) and gguf-py's ``TensorNameMap`` (the GGUF name). Shapes are in numpy order (``[out, in]``
for a Linear weight; GGUF stores the reverse). The inventory is the whole file: llama.cpp refuses a file
with any extra tensor, so nothing outside it is ever written.

Dimension symbols: ``vocab`` (vocab_size), ``hidden`` (hidden_size), ``ffn`` (intermediate_size),
``q`` (num_attention_heads * head_dim), ``kv`` (num_key_value_heads * head_dim).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from so8t.adapters import qwen2vl
from so8t.checkpoint.names import to_hub

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_TEXT_HUB_NAMES = frozenset(f.hub for f in qwen2vl.TENSORS if f.part == "text")


@dataclass(frozen=True)
class TextTensor:
    """One tensor of the text GGUF: hub name, gguf name, numpy-order shape."""

    hf_name: str
    gguf_name: str
    shape: tuple[int, ...]

    @property
    def is_matrix(self) -> bool:
        """2-D weights are stored in the export type; norms and biases (1-D) always in F32."""
        return len(self.shape) == 2


def canonical_name(name: str) -> str:
    """Hub spelling of a tensor name (accepts transformers 5 ``model.language_model.*``)."""
    return to_hub(name)


def gguf_name(hf_name: str) -> str | None:
    """GGUF name of a hub (or transformers-5) text tensor name, or None when it is not in the text file."""
    name = canonical_name(hf_name)
    match = _LAYER.match(name)
    if _LAYER.sub("model.layers.{i}.", name) not in _TEXT_HUB_NAMES:
        return None
    return qwen2vl.gguf_text_name(name, int(match.group(1)) + 1 if match else 1)


def text_inventory(dims: dict[str, int], n_layers: int, tied: bool) -> list[TextTensor]:
    """Every tensor of the text file, in file order (embedding, block by block, final norm, output)."""
    return [
        TextTensor(hub, qwen2vl.gguf_text_name(hub, n_layers), shape)
        for hub, shape, _fact in qwen2vl.expand(dims, n_layers, 0, tied, part="text")
    ]
