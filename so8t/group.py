"""The group SO(8) in torch: generators, skew matrices, rotations, block application.

Conventions (shared by the whole project):

* Row vectors, as in ``torch.nn.Linear``: a rotation acts as ``y = x @ R``.
* A hidden vector of size ``H`` is split into ``H / 8`` independent 8-dim blocks; block ``k`` is
  ``x[..., 8k:8k+8]`` and is rotated by ``R[k]``: ``y_blk = x_blk @ R_blk``. The dense equivalent is the
  block-diagonal ``[H, H]`` matrix of :func:`block_diag`.
* A rotation is parametrised by 28 free generator values, the strict upper triangle of a skew-symmetric
  matrix ``A`` read row by row (``A[i, j] = g[k]`` and ``A[j, i] = -g[k]`` for ``i < j``).
* Two maps send ``A`` into SO(8) (:class:`RotationMap`): the exponential ``R = expm(A)`` and the Cayley
  transform ``R = (I - A/2)^-1 (I + A/2)``. Both send 0 to ``I`` and ``-A`` to ``R^T``; they agree to
  first order (``R ~ I + A``) near zero.
* Every function works in float32 and float64 and keeps the input dtype; pass float64 where exactness
  matters (folding, validation).

Note [one oracle]: :func:`in_so8` is the single membership test used by the test suites, the validator
and the sidecar reader, so "is a rotation" means the same everywhere. Its default tolerance scales with
the dtype (``10 * 8 * eps``, as PyTorch's own orthogonal-parametrisation tests do).

Note [Haar sampling]: QR of a Gaussian matrix gives a Haar-distributed orthogonal ``Q`` only after the
signs of ``diag(R)`` are moved into ``Q``; flipping one column when ``det Q = -1`` then gives Haar on SO(8).
"""

from __future__ import annotations

import enum
import math

import torch

from so8t.errors import HiddenSizeError, RotationDimError

ROTATION_DIM = 8
N_GENERATORS = ROTATION_DIM * (ROTATION_DIM - 1) // 2  # 28

_ROWS, _COLS = torch.triu_indices(ROTATION_DIM, ROTATION_DIM, offset=1)
#: Taylor degree of :func:`_expm` after scaling to 1-norm <= 1/2: remainder < 0.5^19 / 19! ~ 1e-23.
_TAYLOR_DEGREE = 18


class RotationMap(str, enum.Enum):
    """How a skew-symmetric matrix becomes a rotation."""

    EXP = "exp"
    CAYLEY = "cayley"


def check_rotation_dim(dim: int) -> int:
    """Return ``dim`` if it is 8; SO8T means SO(8), so anything else is a :class:`RotationDimError`."""
    if int(dim) != ROTATION_DIM:
        raise RotationDimError(
            f"rotation dimension must be {ROTATION_DIM} (SO8T uses SO(8) blocks), got {dim}",
            hint="use --rotation-dim 8",
        )
    return ROTATION_DIM


def num_blocks(hidden_size: int) -> int:
    """Number of 8-dim blocks in ``hidden_size``; :class:`HiddenSizeError` if it is not divisible by 8."""
    if hidden_size <= 0 or hidden_size % ROTATION_DIM:
        raise HiddenSizeError(
            f"hidden size {hidden_size} is not a positive multiple of {ROTATION_DIM}; "
            "SO(8) gates need whole 8-dim blocks"
        )
    return hidden_size // ROTATION_DIM


def skew(g: torch.Tensor) -> torch.Tensor:
    """Generators ``[..., 28]`` -> skew-symmetric ``[..., 8, 8]`` (upper triangle row by row)."""
    if g.shape[-1] != N_GENERATORS:
        raise RotationDimError(f"expected {N_GENERATORS} generators in the last dimension, got {g.shape[-1]}")
    a = g.new_zeros(*g.shape[:-1], ROTATION_DIM, ROTATION_DIM)
    a[..., _ROWS, _COLS] = g
    return a - a.transpose(-1, -2)


def generators(a: torch.Tensor) -> torch.Tensor:
    """Skew-symmetric ``[..., 8, 8]`` -> generators ``[..., 28]`` (inverse of :func:`skew`)."""
    return a[..., _ROWS, _COLS]


def rotation(g: torch.Tensor, map: RotationMap | str = RotationMap.EXP) -> torch.Tensor:
    """Generators ``[..., 28]`` -> rotations ``[..., 8, 8]`` in SO(8) through ``map``."""
    a = skew(g)
    if RotationMap(map) is RotationMap.EXP:
        return _expm(a)
    eye = torch.eye(ROTATION_DIM, dtype=a.dtype, device=a.device).expand_as(a)
    # (I - A/2)^-1 (I + A/2); the two factors commute, so solve() from the left is exact.
    return torch.linalg.solve(eye - a / 2, eye + a / 2)


def _expm(a: torch.Tensor) -> torch.Tensor:
    """Matrix exponential by scaling and squaring with a degree-18 Taylor polynomial (Horner form).

    Note [own expm]: ``torch.linalg.matrix_exp`` picks a low Taylor degree for small norms and leaves
    orthogonality errors of ~500 eps in float64 on some small skew matrices (seen with two generators of
    0.0156; ~6000 eps with two of 0.03), which fails the dtype-scaled SO(8) oracle: pinned by
    ``suites/test_group_laws.py::test_own_expm_is_needed_torch_matrix_exp_fails_the_so8_oracle`` (torch
    2.13). For 8x8 blocks a fixed high degree costs nothing, stays differentiable through autograd, and
    keeps the defect at a few eps.

    Note [polar step]: each squaring doubles the orthogonality defect, so large generators (reached by
    training: generators of std 1 and above) left ``|R^T R - I|`` and ``|det R - 1|`` beyond the oracle's
    ``80 eps`` (float64: 4e-14 at std 2, 1.5e-13 at std 8; float32: 1.1e-5 at std 1 against 9.5e-6).
    After squaring, one Newton-Schulz step towards the polar factor, ``R (3I - R^T R) / 2``, squares the
    defect away (back to ~1e-15 / ~5e-7 at every scale) while moving ``R`` by no more than the defect; it is
    differentiable and leaves an exactly orthogonal ``R`` (the identity) bit-identical.
    """
    norm = a.detach().abs().sum(-2).amax().item() if a.numel() else 0.0
    squarings = max(0, math.ceil(math.log2(norm / 0.5))) if norm > 0.5 else 0
    b = a / (2.0**squarings)
    eye = torch.eye(ROTATION_DIM, dtype=a.dtype, device=a.device)
    r = eye.expand_as(a)
    for k in range(_taylor_degree(norm / 2.0**squarings, a.dtype), 0, -1):
        r = eye + (b @ r) / k
    for _ in range(squarings):
        r = r @ r
    if squarings:  # Note [polar step]
        r = r @ (3.0 * eye - r.transpose(-1, -2) @ r) / 2.0
    return r


def _taylor_degree(norm: float, dtype: torch.dtype) -> int:
    """Degree of the Taylor polynomial for a scaled 1-norm ``norm <= 1/2``: 18 in float64 (Note [own expm]);
    below float64 the smallest ``k`` whose remainder bound ``norm^(k+1) / (k+1)! * 2`` is under eps/2.

    Note [float32 degree]: training maps every gate forward and backward each step in float32; degree 18
    there cost ~0.19 s of a 4.4 s full-size step (CPU, 1 thread) for terms below float32's resolution.
    The bound keeps the truncation under half an ulp of 1, so the result is as accurate as float32 allows
    (at most degree 9 for ``norm = 1/2``); float64 (folding, export, validation) is unchanged.
    """
    if dtype == torch.float64:
        return _TAYLOR_DEGREE
    eps = torch.finfo(dtype).eps
    k, term = 1, norm * norm / 2.0  # term = norm^(k+1) / (k+1)!
    while k < _TAYLOR_DEGREE and 2.0 * term > eps / 2.0:
        k += 1
        term *= norm / (k + 1)
    return k


def apply_blocks(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Rotate every 8-dim block of ``x[..., H]`` by ``r[H/8, 8, 8]``: ``y_blk = x_blk @ r_blk``."""
    n = num_blocks(x.shape[-1])
    if r.shape != (n, ROTATION_DIM, ROTATION_DIM):
        raise HiddenSizeError(
            f"rotations of shape {tuple(r.shape)} do not match hidden size {x.shape[-1]} "
            f"(expected ({n}, 8, 8))"
        )
    blocks = x.reshape(*x.shape[:-1], n, ROTATION_DIM)
    y = torch.einsum("...ki,kij->...kj", blocks, r.to(x.dtype))
    return y.reshape(x.shape)


def block_diag(r: torch.Tensor) -> torch.Tensor:
    """Dense block-diagonal ``[H, H]`` matrix of rotations ``r[H/8, 8, 8]`` (for folds and tests)."""
    return torch.block_diag(*r.unbind(0))


def compose(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """Rotation applying ``r1`` then ``r2`` to a row vector: ``x @ r1 @ r2 = x @ compose(r1, r2)``."""
    return r1 @ r2


def compose_chain(rotations):
    """The rotation applying ``rotations`` in order (``x @ r1 @ r2 @ ...``): a gate site's effective
    rotation. Works on torch tensors and numpy arrays alike (``@``)."""
    result = None
    for r in rotations:
        result = r if result is None else compose(result, r)
    if result is None:
        raise ValueError("compose_chain needs at least one rotation")
    return result


def inverse(r: torch.Tensor) -> torch.Tensor:
    """Inverse of a rotation, its transpose."""
    return r.transpose(-1, -2)


def haar(n: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` Haar-uniform rotations ``[n, 8, 8]`` from SO(8), deterministic for a seed (Note [Haar sampling])."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, ROTATION_DIM, ROTATION_DIM, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(z)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    flip = torch.linalg.det(q) < 0
    q[flip, :, 0] = -q[flip, :, 0]
    return q.to(dtype)


def default_tolerance(dtype: torch.dtype) -> float:
    """Membership tolerance for a dtype: ``10 * 8 * eps`` (Note [one oracle])."""
    return 10 * ROTATION_DIM * torch.finfo(dtype).eps


def so8_defect(r: torch.Tensor) -> tuple[float, float]:
    """``(max |R^T R - I|, max |det R - 1|)`` over all rotations in ``r[..., 8, 8]``, computed in float64."""
    r64 = r.detach().to(torch.float64)
    eye = torch.eye(ROTATION_DIM, dtype=torch.float64)
    orth = (r64.transpose(-1, -2) @ r64 - eye).abs().amax().item()
    det = (torch.linalg.det(r64) - 1).abs().amax().item()
    return orth, det


def in_so8(r: torch.Tensor, tol: float | None = None) -> bool:
    """True when every ``r[..., 8, 8]`` is orthogonal with determinant +1 within ``tol``.

    ``tol`` defaults to :func:`default_tolerance` of ``r``'s dtype; NaN or Inf entries are never in SO(8).
    """
    if r.shape[-2:] != (ROTATION_DIM, ROTATION_DIM) or not torch.isfinite(r).all():
        return False
    tol = default_tolerance(r.dtype) if tol is None else tol
    orth, det = so8_defect(r)
    return orth <= tol and det <= tol
