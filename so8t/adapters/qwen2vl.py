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
"""

from __future__ import annotations

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

#: Every gate of a decoder layer, in the order they are stored.
GATE_NAMES: tuple[str, ...] = tuple(gate for site in FOLD_SITES for gate in site.gates)

_SITE_PATTERNS = tuple(
    (site, re.compile(re.escape(site.tensor).replace(r"\{layer\}", r"(\d+)") + r"\.(weight|bias)$"))
    for site in FOLD_SITES
)


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
