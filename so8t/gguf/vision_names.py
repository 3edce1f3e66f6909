"""Qwen2-VL vision tower -> llama.cpp mmproj (``clip``, projector ``qwen2vl_merger``): names as data.

Source names are canonical hub names (``visual.*``, as ``CheckpointReader.names()`` yields them).
Target names are the ones llama.cpp's ``tools/mtmd`` loader looks up (``clip-impl.h``: ``TN_PATCH_EMBD``,
``TN_ATTN_Q`` ... with prefix ``v``; ``TN_LN_POST``; ``TN_LLAVA_PROJ`` as ``mm.0`` / ``mm.2``).

Two source tensors are not copied one to one (:class:`Split`):

* ``visual.patch_embed.proj.weight`` is a Conv3d kernel ``[E, C, T=2, P, P]``; llama.cpp runs two Conv2d
  kernels, one per temporal slice, and adds them: ``v.patch_embd.weight`` = ``[:, :, 0]`` and
  ``v.patch_embd.weight.1`` = ``[:, :, 1]``.
* ``attn.qkv`` is one Linear ``[3E, E]`` (rows: q, then k, then v); llama.cpp wants ``attn_q/k/v`` apart,
  so the rows are cut in three equal parts.

Note [merger norm]: the merger's ``ln_q`` LayerNorm runs on every patch *before* the 2x2 merge, which is
exactly where llama.cpp's graph applies ``v.post_ln``; the merger MLP's two Linears are ``mm.0`` and
``mm.2`` (index 1 is the GELU, which has no weights).
"""

from __future__ import annotations

from dataclasses import dataclass

#: General keys of the mmproj file.
ARCHITECTURE = "clip"
PROJECTOR_TYPE = "qwen2vl_merger"
GGUF_TYPE = "mmproj"

#: Per vision block ``N``: canonical module suffix -> mmproj module name (``{N}`` is the block index).
#: Each entry covers ``.weight`` and ``.bias``; both exist for every one of these modules.
BLOCK_TABLE: tuple[tuple[str, str], ...] = (
    ("visual.blocks.{N}.norm1", "v.blk.{N}.ln1"),
    ("visual.blocks.{N}.norm2", "v.blk.{N}.ln2"),
    ("visual.blocks.{N}.attn.proj", "v.blk.{N}.attn_out"),
    ("visual.blocks.{N}.mlp.fc1", "v.blk.{N}.ffn_up"),
    ("visual.blocks.{N}.mlp.fc2", "v.blk.{N}.ffn_down"),
)

#: The fused attention input projection of block ``N`` and its three targets, in row order.
QKV_SOURCE = "visual.blocks.{N}.attn.qkv"
QKV_TARGETS: tuple[str, str, str] = ("v.blk.{N}.attn_q", "v.blk.{N}.attn_k", "v.blk.{N}.attn_v")

#: Modules outside the blocks (weight and bias each).
GLOBAL_TABLE: tuple[tuple[str, str], ...] = (
    ("visual.merger.ln_q", "v.post_ln"),  # Note [merger norm]
    ("visual.merger.mlp.0", "mm.0"),
    ("visual.merger.mlp.2", "mm.2"),
)

#: The Conv3d patch embedding (no bias) and its two temporal halves.
PATCH_SOURCE = "visual.patch_embed.proj.weight"
PATCH_TARGETS: tuple[str, str] = ("v.patch_embd.weight", "v.patch_embd.weight.1")

#: ``vision_config.hidden_act`` -> the clip key that selects it (quick GELU is llama.cpp's default).
ACTIVATION_KEYS: dict[str, str | None] = {
    "quick_gelu": None,
    "gelu": "clip.use_gelu",
    "silu": "clip.use_silu",
}


@dataclass(frozen=True)
class Piece:
    """One mmproj tensor: where it comes from and which part of the source it is.

    ``axis``/``index``/``parts``: the source is cut along ``axis`` into ``parts`` equal pieces and piece
    ``index`` is taken; ``parts == 1`` means the whole tensor. ``select`` instead picks one index along
    ``axis`` and drops that axis (the temporal slices of the Conv3d kernel).
    """

    target: str
    source: str
    axis: int = 0
    index: int = 0
    parts: int = 1
    select: bool = False


def pieces(depth: int) -> list[Piece]:
    """Every mmproj tensor of a tower with ``depth`` blocks, in file order."""
    out = [
        Piece(target, PATCH_SOURCE, axis=2, index=t, select=True) for t, target in enumerate(PATCH_TARGETS)
    ]
    for n in range(depth):
        for kind in ("weight", "bias"):
            src = f"{QKV_SOURCE.format(N=n)}.{kind}"
            out += [
                Piece(f"{target.format(N=n)}.{kind}", src, axis=0, index=i, parts=3)
                for i, target in enumerate(QKV_TARGETS)
            ]
        for source, target in BLOCK_TABLE:
            out += [
                Piece(f"{target.format(N=n)}.{k}", f"{source.format(N=n)}.{k}") for k in ("weight", "bias")
            ]
    for source, target in GLOBAL_TABLE:
        out += [Piece(f"{target}.{k}", f"{source}.{k}") for k in ("weight", "bias")]
    return out
