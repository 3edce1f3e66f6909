"""SO(8) gate modules: learnable block rotations applied to a residual write.

Conventions (see :mod:`so8t.group`): row vectors, ``y = x @ R``; the hidden dimension is split into
``hidden/8`` blocks, each rotated by its own ``R_blk = map(skew(g_blk))``. The trainable parameter is the
generator matrix ``generators[hidden/8, 28]``; zero generators are the identity, so a freshly converted
model computes exactly what its source computes.

:class:`NonCommutativeGate` holds two gates applied in a fixed order, ``R_safe`` then ``R_cmd``:
``y = x @ R_safe @ R_cmd``. SO(8) is not commutative, so the order is part of the model.
"""

from __future__ import annotations

import torch
from torch import nn

from so8t import group
from so8t.group import N_GENERATORS, RotationMap

#: Standard deviation of the generators drawn by ``init="random"`` (rotations of moderate angle).
RANDOM_INIT_STD = 0.3

INITS = ("identity", "random")


def init_generators(n_blocks: int, init: str, seed: int | None) -> torch.Tensor:
    """Initial generators ``[n_blocks, 28]`` (float32): zeros for ``identity``, seeded normals for ``random``."""
    if init == "identity":
        return torch.zeros(n_blocks, N_GENERATORS)
    if init == "random":
        gen = torch.Generator().manual_seed(0 if seed is None else seed)
        return torch.randn(n_blocks, N_GENERATORS, generator=gen) * RANDOM_INIT_STD
    raise ValueError(f"unknown gate init {init!r}; expected one of {INITS}")


class SO8TRotationGate(nn.Module):
    """``y = x @ R`` with ``R`` block-diagonal in SO(8)^(hidden/8), parametrised by ``generators``.

    Args:
        hidden_size: width of the vectors rotated; must be a multiple of 8.
        init: ``"identity"`` (zero generators) or ``"random"`` (seeded normal generators).
        map: :class:`~so8t.group.RotationMap` (``"exp"`` or ``"cayley"``).
        seed: seed for ``init="random"``.
        rotation_dim: must be 8; present so callers can pass a user's flag and get the typed error.
    """

    def __init__(
        self,
        hidden_size: int,
        init: str = "identity",
        map: RotationMap | str = RotationMap.EXP,
        seed: int | None = None,
        rotation_dim: int = 8,
    ):
        super().__init__()
        group.check_rotation_dim(rotation_dim)
        self.hidden_size = hidden_size
        self.map = RotationMap(map)
        self.generators = nn.Parameter(init_generators(group.num_blocks(hidden_size), init, seed))

    def rotations(self) -> torch.Tensor:
        """Per-block rotations ``[hidden/8, 8, 8]`` (differentiable)."""
        return group.rotation(self.generators, self.map)

    def dense(self) -> torch.Tensor:
        """The dense block-diagonal ``[hidden, hidden]`` rotation (for tests and folding)."""
        return group.block_diag(self.rotations())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group.apply_blocks(x, self.rotations())

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, map={self.map.value}"


class NonCommutativeGate(nn.Module):
    """Two gates applied in order, ``R_safe`` then ``R_cmd``: ``y = x @ R_safe @ R_cmd``.

    ``seed`` (default 0) seeds ``safe`` with ``seed`` and ``cmd`` with ``seed + 1`` so the two differ.
    """

    def __init__(
        self,
        hidden_size: int,
        init: str = "identity",
        map: RotationMap | str = RotationMap.EXP,
        seed: int | None = None,
        rotation_dim: int = 8,
    ):
        super().__init__()
        base = 0 if seed is None else seed
        self.safe = SO8TRotationGate(hidden_size, init, map, base, rotation_dim)
        self.cmd = SO8TRotationGate(hidden_size, init, map, base + 1, rotation_dim)

    def rotations(self) -> torch.Tensor:
        """Per-block effective rotations ``R_safe @ R_cmd`` ``[hidden/8, 8, 8]``."""
        return group.compose(self.safe.rotations(), self.cmd.rotations())

    def dense(self) -> torch.Tensor:
        """Dense block-diagonal ``[hidden, hidden]`` effective rotation."""
        return group.block_diag(self.rotations())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cmd(self.safe(x))
