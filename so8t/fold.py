"""Fold (burn in) SO8T gates into plain Linear weights, so stock runtimes compute the SO8T model.

Convention: row vectors as in ``torch.nn.Linear`` (``y = x @ W.T + b``, ``W`` is ``[out, in]``). A gate
after a Linear rotates its output: ``y = (x @ W.T + b) @ R`` with ``R`` the block-diagonal ``[out, out]``
rotation. That equals a Linear with

    W' = R.T @ W        (R multiplies W from the LEFT, transposed)
    b' = b @ R

because ``x @ W.T @ R = x @ (R.T @ W).T``. Folding as ``W @ R`` (the upstream SO8T code) is wrong; the
test suites prove they catch it.

Precision: folds run in float64 from the source weights and stay float64; the consumer casts once to its
export type. Never round the folded weights through bf16 in between.

Which tensors are gate sites, and which gates compose there, comes from :mod:`so8t.adapters.qwen2vl`; this
module never spells a tensor name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from so8t import bf16, group, profile
from so8t.adapters import qwen2vl
from so8t.checkpoint.lazy_rows import tensor_or_rows
from so8t.checkpoint.so8t_dir import SO8TCheckpoint

PARTS = ("text", "vision", "all")
#: 8-row blocks folded per einsum call (64 rows: 4.6 MB of float64 for a 8960-wide weight)
FOLD_CHUNK_BLOCKS = 8


def fold_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, rotation: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fold a dense output rotation into a Linear: ``(R.T @ W, b @ R)`` in float64.

    Args:
        weight: ``[out, in]`` Linear weight (any float dtype).
        bias: ``[out]`` or None.
        rotation: dense ``[out, out]`` rotation ``R`` applied to the Linear's output as ``y @ R``.
    Returns:
        ``(W', b')`` float64, with ``x @ W'.T + b' == (x @ W.T + b) @ R``.
    """
    r = rotation.to(torch.float64)
    folded_w = r.T @ weight.to(torch.float64)
    folded_b = None if bias is None else bias.to(torch.float64) @ r
    return folded_w, folded_b


def fold_linear_blocks(
    weight: torch.Tensor, bias: torch.Tensor | None, rotations: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`fold_linear` for a block-diagonal ``R`` given as blocks ``[out/8, 8, 8]`` (no dense matrix).

    Block ``k`` of the output rows: ``W'[8k:8k+8] = R_k.T @ W[8k:8k+8]``; ``b'_k = b_k @ R_k``. float64.
    """
    r = rotations.to(torch.float64)
    group.num_blocks(weight.shape[0])  # checks that the rows are whole 8-row blocks
    folded = np.empty(tuple(weight.shape), dtype=np.float64)
    # numpy's own einsum loop: 1.6x faster than torch's (MKL batched 8x8 GEMMs) on one thread, no BLAS
    # threads to spin while an export's quantizer threads need the cores; float64 either way. Run on
    # FOLD_CHUNK_BLOCKS blocks at a time, so the float64 copy of the source rows is still in the cache when
    # einsum reads it: the same per-element arithmetic (identical bits), and on a 1536 x 8960 bf16 weight
    # 0.08 s instead of 0.11-0.14 s for the whole tensor at once.
    step = FOLD_CHUNK_BLOCKS * group.ROTATION_DIM
    for start in range(0, weight.shape[0], step):
        rows = bf16.to_float64(weight[start : start + step]).reshape(-1, group.ROTATION_DIM, weight.shape[1])
        blocks = r[start // group.ROTATION_DIM : start // group.ROTATION_DIM + rows.shape[0]].numpy()
        folded[start : start + step] = np.einsum("kji,kjc->kic", blocks, rows).reshape(-1, weight.shape[1])
    folded_w = torch.from_numpy(folded)
    folded_b = None
    if bias is not None:
        folded_b = group.apply_blocks(bias.to(torch.float64), r)
    return folded_w, folded_b


def fold_tensor(checkpoint: SO8TCheckpoint, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """The gate-site tensor ``name`` (values ``tensor``, the source's or a permutation of its columns) folded
    with the checkpoint's gates, float64."""
    site, layer, kind = qwen2vl.fold_site(name)
    rotations = checkpoint.site_rotation(layer, site)
    with profile.phase("fold"):
        if kind == "weight":
            return fold_linear_blocks(tensor, None, rotations)[0]
        return group.apply_blocks(tensor.to(torch.float64), rotations)


def folded_rows(checkpoint: SO8TCheckpoint, name: str, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the plain-model tensor ``name`` as float64 (a 1-D tensor: the whole of it):
    folded for gate-site Linears, exact otherwise. A fold acts on each 8-row block of the output rows on
    its own (``W'[8k:8k+8] = R_k.T @ W[8k:8k+8]``), so ``start`` and ``stop`` must be multiples of 8 there;
    only those rows of the source are read."""
    reader = checkpoint.reader
    site = qwen2vl.fold_site(name)
    if len(reader.shape(name)) < 2:
        tensor = reader.get(name)
        return (fold_tensor(checkpoint, name, tensor) if site else tensor).to(torch.float64).numpy()
    rows = reader.get_rows(name, start, stop)
    if site is None:
        return bf16.to_float64(rows)
    if start % group.ROTATION_DIM or stop % group.ROTATION_DIM:
        raise ValueError(f"{name}: fold rows {start}:{stop} are not whole 8-row blocks")
    site_, layer, _kind = site
    blocks = checkpoint.site_rotation(layer, site_)[start // group.ROTATION_DIM : stop // group.ROTATION_DIM]
    return fold_linear_blocks(rows, None, blocks)[0].numpy()


def iter_folded_tensors(
    so8t_dir: str | Path | SO8TCheckpoint, part: str = "all", lazy_above: int | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Stream ``(canonical_name, tensor)`` of the plain Qwen2-VL model equivalent to an SO8T checkpoint.

    Gate-site Linears (``o_proj``, ``down_proj``; weight and bias if present) come folded, in float64;
    every other tensor comes unchanged in its source dtype. One tensor is held at a time.

    Args:
        so8t_dir: an SO8T checkpoint directory (or an open :class:`SO8TCheckpoint`).
        part: ``"text"`` (language model incl. embeddings and lm_head), ``"vision"`` or ``"all"``.
        lazy_above: tensors that are not folded and hold more bytes come as
            :class:`~so8t.checkpoint.lazy_rows.LazyRows`, read when sliced (None: every tensor is read).
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    checkpoint = so8t_dir if isinstance(so8t_dir, SO8TCheckpoint) else SO8TCheckpoint(so8t_dir)
    with torch.no_grad():
        for name in checkpoint.reader.names():
            if part != "all" and qwen2vl.part_of(name) != part:
                continue
            if qwen2vl.fold_site(name) is not None:
                yield name, fold_tensor(checkpoint, name, checkpoint.reader.get(name))
            else:
                yield name, tensor_or_rows(checkpoint.reader, name, lazy_above)
