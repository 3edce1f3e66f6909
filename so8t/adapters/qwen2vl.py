"""Qwen2-VL adapter: where the SO8T gate sites are, and how hub tensor names map onto transformers modules.

This is the only module that spells Qwen2-VL gate-site and module names. Two tensor-name spellings
exist (their prefix table lives in :mod:`so8t.checkpoint.names`):

- *canonical* (hub, on disk): ``model.layers.N.self_attn.o_proj.weight``, ``model.embed_tokens.weight``,
  ``model.norm.weight``, ``lm_head.weight``, ``visual.*``. ``CheckpointReader.names()`` yields these.
- *in memory* (transformers 5): ``model.language_model.layers.N...``, ``model.visual.*``, ``lm_head.weight``.

Gate sites (docs/reference.md section 1), both on a residual write, before the residual add:

- ``attention_output``: the output of ``self_attn.o_proj``; gates ``attn_rot`` then ``attn_safe`` then
  ``attn_cmd`` (effective rotation ``R_rot @ R_safe @ R_cmd``, row vectors: ``y = o @ R``).
- ``mlp_output``: the output of ``mlp.down_proj``; gate ``mlp_rot``.

Tensor facts (:data:`TENSORS`): every tensor of a Qwen2-VL checkpoint as one row of data, in module
order (the order the test-model builder writes and the text GGUF lists them): the canonical hub name
(``{i}`` is the decoder layer or vision block), the shape in config symbols (:func:`dims`; numpy/torch
order, ``[out, in]`` for a Linear), the part (text/vision), the init kind, the gate site whose Linear it
is, and whether it exists only for untied embeddings. The transformers-5 name follows from the prefix
table of :mod:`so8t.checkpoint.names`; the text GGUF name comes from gguf-py's ``TensorNameMap`` for
llama.cpp's ``qwen2vl`` architecture (:func:`gguf_text_name`). Every other list of Qwen2-VL tensors
(the reader's completeness check, the text GGUF inventory, the test-model builder) derives from it.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass

from torch import nn

from so8t.checkpoint import names


@dataclass(frozen=True)
class FoldSite:
    """One place where gates sit on the output of a Linear.

    ``gates`` are applied left to right (``y = x @ R_gates[0] @ R_gates[1] ...``); ``module`` is the
    Linear's path inside a decoder layer; ``tensor`` the canonical weight name with ``{layer}``.
    """

    name: str
    module: str
    tensor: str
    gates: tuple[str, ...]


#: The gate sites, as data. Order of ``gates`` is the order of multiplication.
FOLD_SITES: tuple[FoldSite, ...] = (
    FoldSite(
        name="attention_output",
        module="self_attn.o_proj",
        tensor="model.layers.{layer}.self_attn.o_proj",
        gates=("attn_rot", "attn_safe", "attn_cmd"),
    ),
    FoldSite(
        name="mlp_output",
        module="mlp.down_proj",
        tensor="model.layers.{layer}.mlp.down_proj",
        gates=("mlp_rot",),
    ),
)

#: Canonical names of the text model's global tensors.
EMBED_TOKENS, FINAL_NORM = "model.embed_tokens.weight", "model.norm.weight"  # rows of TENSORS below
LM_HEAD = names.LM_HEAD

#: Every gate of a decoder layer, in the order they are stored.
GATE_NAMES: tuple[str, ...] = tuple(gate for site in FOLD_SITES for gate in site.gates)

_SITE_PATTERNS = tuple(
    (site, re.compile(re.escape(site.tensor).replace(r"\{layer\}", r"(\d+)") + r"\.(weight|bias)$"))
    for site in FOLD_SITES
)


@dataclass(frozen=True)
class TensorFact:
    """One tensor of a Qwen2-VL checkpoint (see the module docstring)."""

    hub: str  # canonical hub name; "{i}" is the layer / block index
    shape: tuple[str, ...]  # symbols of dims()
    kind: str  # "matrix" (also the Conv3d kernel), "norm" (a norm's weight or bias), "bias" (a Linear's)
    site: str | None = None  # FoldSite.name when this is the weight of a gate site's Linear
    untied_only: bool = False  # lm_head.weight: present only when tie_word_embeddings is false

    @property
    def part(self) -> str:
        return "vision" if self.hub.startswith("visual.") else "text"

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hub


def _layer(suffix: str, shape: tuple[str, ...], kind: str, site: str | None = None) -> TensorFact:
    return TensorFact(f"model.layers.{{i}}.{suffix}", shape, kind, site)


def _block(suffix: str, shape: tuple[str, ...], kind: str) -> TensorFact:
    return TensorFact(f"visual.blocks.{{i}}.{suffix}", shape, kind)


#: Every Qwen2-VL tensor, in module order (text tower, then vision tower).
TENSORS: tuple[TensorFact, ...] = (
    TensorFact(EMBED_TOKENS, ("vocab", "hidden"), "matrix"),
    _layer("input_layernorm.weight", ("hidden",), "norm"),
    _layer("self_attn.q_proj.weight", ("q", "hidden"), "matrix"),
    _layer("self_attn.q_proj.bias", ("q",), "bias"),
    _layer("self_attn.k_proj.weight", ("kv", "hidden"), "matrix"),
    _layer("self_attn.k_proj.bias", ("kv",), "bias"),
    _layer("self_attn.v_proj.weight", ("kv", "hidden"), "matrix"),
    _layer("self_attn.v_proj.bias", ("kv",), "bias"),
    _layer("self_attn.o_proj.weight", ("hidden", "q"), "matrix", "attention_output"),
    _layer("post_attention_layernorm.weight", ("hidden",), "norm"),
    _layer("mlp.gate_proj.weight", ("ffn", "hidden"), "matrix"),
    _layer("mlp.up_proj.weight", ("ffn", "hidden"), "matrix"),
    _layer("mlp.down_proj.weight", ("hidden", "ffn"), "matrix", "mlp_output"),
    TensorFact(FINAL_NORM, ("hidden",), "norm"),
    TensorFact(LM_HEAD, ("vocab", "hidden"), "matrix", untied_only=True),
    TensorFact("visual.patch_embed.proj.weight", ("embed", "channels", "temporal", "patch", "patch"), "matrix"),
    _block("norm1.weight", ("embed",), "norm"),
    _block("norm1.bias", ("embed",), "norm"),
    _block("norm2.weight", ("embed",), "norm"),
    _block("norm2.bias", ("embed",), "norm"),
    _block("attn.qkv.weight", ("qkv", "embed"), "matrix"),
    _block("attn.qkv.bias", ("qkv",), "bias"),
    _block("attn.proj.weight", ("embed", "embed"), "matrix"),
    _block("attn.proj.bias", ("embed",), "bias"),
    _block("mlp.fc1.weight", ("vffn", "embed"), "matrix"),
    _block("mlp.fc1.bias", ("vffn",), "bias"),
    _block("mlp.fc2.weight", ("embed", "vffn"), "matrix"),
    _block("mlp.fc2.bias", ("embed",), "bias"),
    TensorFact("visual.merger.ln_q.weight", ("embed",), "norm"),
    TensorFact("visual.merger.ln_q.bias", ("embed",), "norm"),
    TensorFact("visual.merger.mlp.0.weight", ("merger", "merger"), "matrix"),
    TensorFact("visual.merger.mlp.0.bias", ("merger",), "bias"),
    TensorFact("visual.merger.mlp.2.weight", ("hidden", "merger"), "matrix"),
    TensorFact("visual.merger.mlp.2.bias", ("hidden",), "bias"),
)

#: Shape symbol -> the config fields it is computed from (for error messages).
SYMBOL_FIELDS: dict[str, str] = {
    "vocab": "vocab_size",
    "hidden": "hidden_size",
    "ffn": "intermediate_size",
    "q": "num_attention_heads * head_dim",
    "kv": "num_key_value_heads * head_dim",
    "embed": "vision_config.embed_dim",
    "qkv": "3 * vision_config.embed_dim",
    "vffn": "vision_config.embed_dim * mlp_ratio",
    "merger": "vision_config.embed_dim * spatial_merge_size**2",
    "channels": "vision_config.in_channels",
    "temporal": "vision_config.temporal_patch_size",
    "patch": "vision_config.patch_size",
}


def dims(text, vision) -> dict[str, int]:
    """Values of the shape symbols for a text and a vision config (``so8t.checkpoint.config`` types, or
    anything with the same attribute names)."""
    return {
        **vision_dims(vision),
        "vocab": int(text.vocab_size),
        "hidden": int(text.hidden_size),
        "ffn": int(text.intermediate_size),
        "q": int(text.num_attention_heads) * int(text.head_dim),
        "kv": int(text.num_key_value_heads) * int(text.head_dim),
    }


def vision_dims(vision) -> dict[str, int]:
    """The symbols the vision tower's shapes use; ``hidden`` is the merger output (``vision.hidden_size``,
    which a valid config makes the text hidden size)."""
    e = int(vision.embed_dim)
    return {
        "hidden": int(vision.hidden_size),
        "embed": e,
        "qkv": 3 * e,
        "vffn": int(vision.ffn_dim),  # embed_dim * mlp_ratio
        "merger": e * int(vision.spatial_merge_size) ** 2,
        "channels": int(vision.in_channels),
        "temporal": int(vision.temporal_patch_size),
        "patch": int(vision.patch_size),
    }


def expand(
    sizes: dict[str, int], num_layers: int, vision_depth: int, tied: bool, part: str | None = None
) -> list[tuple[str, tuple[int, ...], TensorFact]]:
    """``(hub name, shape, fact)`` of every tensor a checkpoint of these sizes holds, in module order;
    ``part`` ``"text"`` / ``"vision"`` keeps one tower."""
    kept = [f for f in TENSORS if (part is None or f.part == part) and not (f.untied_only and tied)]
    out: list[tuple[str, tuple[int, ...], TensorFact]] = []
    for (tower, per_layer), run in itertools.groupby(kept, key=lambda f: (f.part, f.per_layer)):
        run = list(run)
        count = (num_layers if tower == "text" else vision_depth) if per_layer else 1
        for i in range(count):  # layer by layer: all tensors of layer 0, then of layer 1, ...
            out += [(f.hub.format(i=i), tuple(sizes[s] for s in f.shape), f) for f in run]
    return out


@functools.lru_cache(maxsize=8)
def _gguf_name_map(num_layers: int):
    import gguf

    return gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2VL, num_layers)


def gguf_text_name(hub_name: str, num_layers: int) -> str | None:
    """llama.cpp's ``qwen2vl`` name of a canonical text tensor name (gguf-py's ``TensorNameMap`` for a
    model of ``num_layers`` decoder layers), or None when the text GGUF has no such tensor."""
    return _gguf_name_map(num_layers).get_name(hub_name, try_suffixes=(".weight", ".bias"))


def text_layer_tensor(layer: int, suffix: str) -> str:
    """Canonical name of a decoder layer's tensor or module: ``suffix`` as after ``model.layers.{i}.`` in
    :data:`TENSORS` (``"self_attn.q_proj.weight"``) or a module path inside the layer (``"mlp.down_proj"``)."""
    return f"model.layers.{layer}.{suffix}"


def site_named(name: str) -> FoldSite:
    """The gate site called ``name`` (``"attention_output"`` or ``"mlp_output"``)."""
    return next(site for site in FOLD_SITES if site.name == name)


def to_memory_name(canonical: str) -> str:
    """Map a canonical (hub) tensor name to its transformers-5 parameter name (table in checkpoint.names)."""
    return names.to_transformers5(canonical)


def part_of(canonical: str) -> str:
    """``"text"`` or ``"vision"`` for a canonical tensor name."""
    if names.is_vision(canonical):
        return "vision"
    if names.is_text(canonical):
        return "text"
    raise KeyError(f"not a Qwen2-VL tensor name: {canonical}")


def fold_site(canonical: str) -> tuple[FoldSite, int, str] | None:
    """``(site, layer, "weight"|"bias")`` if the tensor is a gate site's Linear, else None."""
    for site, pattern in _SITE_PATTERNS:
        match = pattern.match(canonical)
        if match:
            return site, int(match.group(1)), match.group(2)
    return None


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The text decoder layers of a ``Qwen2VLForConditionalGeneration``."""
    return model.model.language_model.layers


def site_module(model: nn.Module, layer: int, site: FoldSite) -> nn.Linear:
    """The Linear whose output carries ``site``'s gates in decoder layer ``layer``."""
    return decoder_layers(model)[layer].get_submodule(site.module)


def config_from_dict(raw: dict, rms_norm_eps: float | None = None, attn_implementation: str = "sdpa"):
    """A transformers ``Qwen2VLConfig`` from a config.json dict (hub flat or nested text_config form).

    ``rms_norm_eps`` overrides the text RMSNorm epsilon (the parity suites use 0.0 to mirror llama.cpp,
    which ignores the key, docs/reference.md section 5). The ``so8t`` section, if any, is dropped.
    """
    from transformers import Qwen2VLConfig

    raw = {k: v for k, v in raw.items() if k != "so8t"}
    config = Qwen2VLConfig.from_dict(raw)
    if rms_norm_eps is not None:
        config.text_config.rms_norm_eps = float(rms_norm_eps)
    config._attn_implementation = attn_implementation
    config.text_config._attn_implementation = attn_implementation
    config.vision_config._attn_implementation = attn_implementation
    return config


def mm_token_type_ids(input_ids, config):
    """Token types for M-RoPE: 0 text, 1 image placeholder, 2 video placeholder (``[batch, seq]`` int)."""
    import torch

    types = torch.zeros_like(input_ids, dtype=torch.int32)
    types[input_ids == config.image_token_id] = 1
    types[input_ids == config.video_token_id] = 2
    return types
