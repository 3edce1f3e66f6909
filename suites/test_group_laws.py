"""Group laws of SO(8) and of the gate modules, checked with hypothesis.

Inputs are built structurally (bounded generator values -> skew matrix -> rotation); nothing is filtered.
Tolerances scale with the dtype: ``group.default_tolerance(dtype) = 10 * 8 * eps`` for membership, and
``tol_for(dtype, scale)`` below for products of a few 8x8 matrices with entries of size ``scale``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from so8t import group
from so8t.errors import GroupError, HiddenSizeError, RotationDimError
from so8t.gates import NonCommutativeGate, SO8TRotationGate
from so8t.group import N_GENERATORS, RotationMap

DTYPES = (torch.float32, torch.float64)
MAPS = tuple(RotationMap)
#: Generator values are bounded so that float32 matrix exponentials stay accurate to a few eps.
GEN_BOUND = 1.0


def tol_for(dtype: torch.dtype, scale: float = 1.0) -> float:
    """Error allowance for a handful of 8x8 products of unit-size entries: ``10 * 8 * eps * scale``."""
    return group.default_tolerance(dtype) * scale


@st.composite
def generator_vectors(draw, n_blocks=None, bound=GEN_BOUND, dtype=torch.float64):
    n = draw(st.integers(1, 4) if n_blocks is None else n_blocks)
    values = draw(
        st.lists(
            st.floats(-bound, bound, allow_nan=False, allow_infinity=False),
            min_size=n * N_GENERATORS,
            max_size=n * N_GENERATORS,
        )
    )
    return torch.tensor(values, dtype=dtype).reshape(n, N_GENERATORS)


@st.composite
def rotations(draw, dtype=None, map=None):
    dtype = dtype or draw(st.sampled_from(DTYPES))
    map = map or draw(st.sampled_from(MAPS))
    g = draw(generator_vectors(dtype=torch.float64))
    return group.rotation(g, map).to(dtype), g, map


@given(rotations())
def test_rotations_are_orthogonal_with_unit_determinant(sample):
    r, _, _ = sample
    orth, det = group.so8_defect(r)
    assert orth <= group.default_tolerance(r.dtype)
    assert det <= group.default_tolerance(r.dtype)
    assert group.in_so8(r)


@given(st.sampled_from(DTYPES), st.sampled_from(MAPS), generator_vectors())
def test_maps_land_in_so8_in_the_working_dtype(dtype, map, g):
    assert group.in_so8(group.rotation(g.to(dtype), map))


@given(rotations(dtype=torch.float64), rotations(dtype=torch.float64))
def test_closure_under_products(a, b):
    ra, rb = a[0], b[0]
    n = min(len(ra), len(rb))
    assert group.in_so8(group.compose(ra[:n], rb[:n]))


@given(st.sampled_from(DTYPES), st.sampled_from(MAPS), generator_vectors())
def test_inverse_is_transpose_is_map_of_negated_generator(dtype, map, g):
    g = g.to(dtype)
    r = group.rotation(g, map)
    r_neg = group.rotation(-g, map)
    eye = torch.eye(8, dtype=dtype)
    assert torch.allclose(group.inverse(r), r_neg, rtol=0, atol=tol_for(dtype))
    assert torch.allclose(group.compose(r, r_neg), eye.expand_as(r), rtol=0, atol=tol_for(dtype))
    assert torch.equal(group.inverse(r), r.transpose(-1, -2))


@pytest.mark.parametrize("map", MAPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_generator_is_exactly_identity(map, dtype):
    r = group.rotation(torch.zeros(3, N_GENERATORS, dtype=dtype), map)
    assert torch.equal(r, torch.eye(8, dtype=dtype).expand(3, 8, 8))


@given(generator_vectors())
def test_skew_round_trip_and_antisymmetry(g):
    a = group.skew(g)
    assert torch.equal(a, -a.transpose(-1, -2))
    assert torch.equal(group.generators(a), g)


@given(rotations(), st.integers(1, 3), st.data())
def test_block_application_preserves_norms_and_matches_dense(sample, rows, data):
    r, _, _ = sample
    hidden = 8 * len(r)
    x = torch.tensor(
        data.draw(st.lists(st.floats(-10, 10, allow_nan=False), min_size=rows * hidden, max_size=rows * hidden)),
        dtype=r.dtype,
    ).reshape(rows, hidden)
    y = group.apply_blocks(x, r)
    scale = max(1.0, x.abs().max().item()) * 8
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), rtol=0, atol=tol_for(r.dtype, scale))
    assert torch.allclose(y, x @ group.block_diag(r), rtol=0, atol=tol_for(r.dtype, scale))


def test_block_application_keeps_leading_shape():
    r = group.haar(4, seed=1)
    x = torch.randn(2, 3, 5, 32, dtype=torch.float64)
    y = group.apply_blocks(x, r)
    assert y.shape == x.shape
    assert torch.allclose(y[1, 2, 3, 8:16], x[1, 2, 3, 8:16] @ r[1], rtol=0, atol=1e-14)


def _pair(safe: torch.Tensor, cmd: torch.Tensor, map: RotationMap) -> NonCommutativeGate:
    gate = NonCommutativeGate(8 * len(safe), map=map).double()
    with torch.no_grad():
        gate.safe.generators.copy_(safe)
        gate.cmd.generators.copy_(cmd)
    return gate


@given(st.sampled_from(MAPS), generator_vectors(n_blocks=st.just(1), bound=0.3), st.floats(0.3, 1.0))
def test_pair_gate_order_matters_for_generic_generators(map, safe, tilt):
    # R_cmd turns the (0, 1) plane; R_safe is generic with a guaranteed (0, 2) component, so
    # [A_safe, A_cmd][2, 1] = 0.7 * tilt != 0. With ||A||_2 < pi both maps are injective and their
    # images commute only if the generators do: the two orders must give different rotations.
    safe = safe.clone()
    safe[0, 1] = tilt  # generator index 1 is the (0, 2) plane
    cmd = torch.zeros_like(safe)
    cmd[0, 0] = 0.7
    gate = _pair(safe, cmd, map)
    x = torch.eye(8, dtype=torch.float64)
    assert torch.allclose(gate(x), x @ gate.safe.dense() @ gate.cmd.dense(), rtol=0, atol=1e-12)
    assert (gate(x) - x @ gate.cmd.dense() @ gate.safe.dense()).abs().max() > 1e-6


def test_pair_gate_order_matters_for_a_known_pair():
    safe = torch.zeros(1, N_GENERATORS, dtype=torch.float64)
    cmd = torch.zeros(1, N_GENERATORS, dtype=torch.float64)
    safe[0, 0] = 0.9  # rotation in the (0, 1) plane
    cmd[0, 1] = 0.9  # rotation in the (0, 2) plane: these planes share an axis, so they do not commute
    gate = _pair(safe, cmd, RotationMap.EXP)
    x = torch.eye(8, dtype=torch.float64)
    assert (gate(x) - x @ gate.cmd.dense() @ gate.safe.dense()).abs().max() > 0.1


@given(st.sampled_from(MAPS), generator_vectors(), st.floats(-2, 2, allow_nan=False))
def test_pair_gate_order_irrelevant_when_generators_commute(map, safe, c):
    gate = _pair(safe, c * safe, map)  # A and cA commute, so do their images under either map
    x = torch.eye(8 * len(safe), dtype=torch.float64)
    assert torch.allclose(gate(x), x @ gate.cmd.dense() @ gate.safe.dense(), rtol=0, atol=1e-12)


@given(generator_vectors(), st.floats(1e-4, 1e-1))
def test_exp_and_cayley_agree_to_first_order(g, t):
    a = group.skew(g * t)
    # For ||A|| <= 1 both series leave at most ||A||^2 after I + A (see the module docstring).
    bound = torch.linalg.matrix_norm(a, ord=2).amax().item() ** 2 + tol_for(torch.float64)
    for map in MAPS:
        r = group.rotation(g * t, map)
        assert group.in_so8(r)
        assert (r - torch.eye(8, dtype=torch.float64) - a).abs().max().item() <= bound


@pytest.mark.parametrize("map", MAPS)
def test_gate_stays_in_so8_after_optimiser_steps(map):
    torch.manual_seed(0)
    gate = SO8TRotationGate(64, init="random", map=map, seed=5)
    target = torch.randn(16, 64)
    x = torch.randn(16, 64)
    opt = torch.optim.Adam(gate.parameters(), lr=0.1)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = ((gate(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]  # the optimiser really moved the gate
    assert group.in_so8(gate.rotations().detach())


def test_haar_samples_are_rotations_and_reproducible():
    r = group.haar(500, seed=7)
    assert group.in_so8(r)
    assert torch.equal(r, group.haar(500, seed=7))
    # Haar on SO(8): E[R] = 0, each entry has variance 1/8.
    assert r.mean(0).abs().max() < 0.1
    assert abs(r.var(0).mean().item() - 1 / 8) < 0.02


def test_in_so8_rejects_non_rotations():
    r = group.haar(2, seed=3)
    reflection = r.clone()
    reflection[0, :, 0] *= -1
    assert not group.in_so8(reflection)
    assert not group.in_so8(r * 1.001)
    bad = r.clone()
    bad[1, 2, 3] = float("nan")
    assert not group.in_so8(bad)
    assert not group.in_so8(torch.eye(4, dtype=torch.float64))


@pytest.mark.parametrize("hidden", [0, 7, 12, 1540])
def test_hidden_size_not_divisible_by_8_is_a_typed_error(hidden):
    with pytest.raises(HiddenSizeError):
        group.num_blocks(hidden)
    with pytest.raises(HiddenSizeError):
        SO8TRotationGate(hidden)


@pytest.mark.parametrize("dim", [2, 4, 16])
def test_rotation_dim_other_than_8_is_a_typed_error(dim):
    with pytest.raises(RotationDimError, match="must be 8"):
        group.check_rotation_dim(dim)
    with pytest.raises(GroupError):
        SO8TRotationGate(64, rotation_dim=dim)
    with pytest.raises(GroupError):
        NonCommutativeGate(64, rotation_dim=dim)


def test_apply_blocks_rejects_mismatched_rotations():
    with pytest.raises(HiddenSizeError):
        group.apply_blocks(torch.zeros(2, 16), group.haar(3))


@pytest.mark.parametrize(
    ("indices", "value"),
    [((0, 1), 0.0156), ((0, 13), 0.03)],
    ids=["the note's case", "worst pair found"],
)
def test_own_expm_is_needed_torch_matrix_exp_fails_the_so8_oracle(indices, value):
    """Note [own expm] in so8t.group: on these small skew matrices (two generators set) torch's
    ``linalg.matrix_exp`` leaves an orthogonality defect of ~500 and ~6000 float64 eps, above the
    dtype-scaled oracle (80 eps); the degree-18 Taylor exponential stays at a few eps. The day torch passes
    here, ``group.rotation`` can use torch's exponential (and this test says so by failing)."""
    g = torch.zeros(N_GENERATORS, dtype=torch.float64)
    g[list(indices)] = value
    theirs = torch.linalg.matrix_exp(group.skew(g))
    assert not group.in_so8(theirs), group.so8_defect(theirs)
    ours = group.rotation(g, RotationMap.EXP)
    assert group.in_so8(ours), group.so8_defect(ours)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)  # the same rotation, up to torch's error
