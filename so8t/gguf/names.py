"""Hugging Face -> GGUF names of the Qwen2-VL text model, as data.

Each row maps a canonical hub name (``model.layers.{i}....``) to the name llama.cpp's ``qwen2vl``
architecture looks up, with the tensor's shape in numpy order (``[out, in]`` for a Linear weight,
GGUF stores the reverse) written in terms of the hyper-parameters below. The table is the whole
inventory: llama.cpp refuses a file with any extra tensor, so nothing outside it is ever written.

Dimension symbols: ``vocab`` (vocab_size), ``hidden`` (hidden_size), ``ffn`` (intermediate_size),
``q`` (num_attention_heads * head_dim), ``kv`` (num_key_value_heads * head_dim).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Tensors outside the decoder blocks: hub name -> (gguf name, shape symbols).
GLOBAL_TENSORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "model.embed_tokens.weight": ("token_embd.weight", ("vocab", "hidden")),
    "model.norm.weight": ("output_norm.weight", ("hidden",)),
    # Absent when the embeddings are tied: llama.cpp then reuses token_embd for the output.
    "lm_head.weight": ("output.weight", ("vocab", "hidden")),
}

#: Tensors of decoder block ``{i}``: hub suffix after ``model.layers.{i}.`` -> (gguf suffix after
#: ``blk.{i}.``, shape symbols).
BLOCK_TENSORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "input_layernorm.weight": ("attn_norm.weight", ("hidden",)),
    "self_attn.q_proj.weight": ("attn_q.weight", ("q", "hidden")),
    "self_attn.q_proj.bias": ("attn_q.bias", ("q",)),
    "self_attn.k_proj.weight": ("attn_k.weight", ("kv", "hidden")),
    "self_attn.k_proj.bias": ("attn_k.bias", ("kv",)),
    "self_attn.v_proj.weight": ("attn_v.weight", ("kv", "hidden")),
    "self_attn.v_proj.bias": ("attn_v.bias", ("kv",)),
    "self_attn.o_proj.weight": ("attn_output.weight", ("hidden", "q")),
    "post_attention_layernorm.weight": ("ffn_norm.weight", ("hidden",)),
    "mlp.gate_proj.weight": ("ffn_gate.weight", ("ffn", "hidden")),
    "mlp.up_proj.weight": ("ffn_up.weight", ("ffn", "hidden")),
    "mlp.down_proj.weight": ("ffn_down.weight", ("hidden", "ffn")),
}

#: In-memory spellings of transformers 5.x -> the canonical hub prefix.
_ALIASES = (("model.language_model.", "model."),)
_BLOCK = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


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
    """Hub spelling of a text tensor name (accepts transformers 5 ``model.language_model.*``)."""
    for alias, canonical in _ALIASES:
        if name.startswith(alias):
            return canonical + name[len(alias) :]
    return name


def gguf_name(hf_name: str) -> str | None:
    """GGUF name of a hub text tensor name, or None when it is not part of the text file."""
    name = canonical_name(hf_name)
    if name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[name][0]
    match = _BLOCK.match(name)
    if match and match.group(2) in BLOCK_TENSORS:
        return f"blk.{match.group(1)}.{BLOCK_TENSORS[match.group(2)][0]}"
    return None


def text_inventory(dims: dict[str, int], n_layers: int, tied: bool) -> list[TextTensor]:
    """Every tensor of the text file, in file order (globals first, then block by block)."""

    def shape(symbols: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(dims[s] for s in symbols)

    out = [
        TextTensor("model.embed_tokens.weight", *_spec(GLOBAL_TENSORS["model.embed_tokens.weight"], shape))
    ]
    for i in range(n_layers):
        for suffix, (gsuffix, symbols) in BLOCK_TENSORS.items():
            out.append(TextTensor(f"model.layers.{i}.{suffix}", f"blk.{i}.{gsuffix}", shape(symbols)))
    out.append(TextTensor("model.norm.weight", *_spec(GLOBAL_TENSORS["model.norm.weight"], shape)))
    if not tied:
        out.append(TextTensor("lm_head.weight", *_spec(GLOBAL_TENSORS["lm_head.weight"], shape)))
    return out


def _spec(entry: tuple[str, tuple[str, ...]], shape) -> tuple[str, tuple[int, ...]]:
    return entry[0], shape(entry[1])
