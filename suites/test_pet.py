"""PET regulariser: second differences over positions, masked mean, and the three-phase schedule.

Expected values are worked out by hand in the comments, not by the code under test.
"""

from __future__ import annotations

import pytest
import torch

from so8t.pet import PETRegularizer, pet_loss, pet_schedule

# One sequence, hidden size 2, four positions:
#   h0 = (0, 0), h1 = (1, 0), h2 = (4, 1), h3 = (9, 4)
# d2_0 = h0 - 2 h1 + h2 = (0 - 2 + 4, 0 - 0 + 1) = (2, 1)  -> ||d2_0||^2 = 4 + 1 = 5
# d2_1 = h1 - 2 h2 + h3 = (1 - 8 + 9, 0 - 2 + 4) = (2, 2)  -> ||d2_1||^2 = 4 + 4 = 8
H = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [4.0, 1.0], [9.0, 4.0]]], dtype=torch.float64)


def test_unmasked_loss_is_mean_of_squared_second_differences():
    assert pet_loss(H).item() == pytest.approx((5 + 8) / 2)  # 6.5


def test_mask_drops_triples_touching_a_pad():
    # mask (1, 1, 1, 0): only the triple (0, 1, 2) is valid -> 5
    assert pet_loss(H, torch.tensor([[1, 1, 1, 0]])).item() == pytest.approx(5.0)
    # mask (0, 1, 1, 1): only the triple (1, 2, 3) is valid -> 8
    assert pet_loss(H, torch.tensor([[0, 1, 1, 1]])).item() == pytest.approx(8.0)


def test_mean_is_over_valid_triples_of_the_whole_batch():
    # second row: a straight line h_t = (t, 2t): every d2 is 0; both of its triples are valid.
    line = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]], dtype=torch.float64)
    batch = torch.cat([H, line])
    # valid triples: row 0 -> 5 and 8; row 1 -> 0 and 0: (5 + 8 + 0 + 0) / 4 = 3.25
    assert pet_loss(batch, torch.ones(2, 4)).item() == pytest.approx(3.25)
    # row 0 masked (1,1,1,0): its triples 5 (valid), 8 (invalid); row 1 two zeros: 5 / 3
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    assert pet_loss(batch, mask).item() == pytest.approx(5 / 3)


def test_no_valid_triple_gives_zero_with_a_gradient():
    h = H.clone().requires_grad_(True)
    loss = pet_loss(h, torch.tensor([[1, 1, 0, 1]]))  # every triple touches position 2
    assert loss.item() == 0.0
    loss.backward()
    assert h.grad is not None and torch.count_nonzero(h.grad) == 0
    assert pet_loss(H[:, :2]).item() == 0.0  # fewer than three positions


def test_gradient_matches_hand_derivative():
    # d/dh of ||d2_0||^2 / 1 with only triple 0 valid: dL/dh0 = 2 d2_0 = (4, 2), dL/dh1 = -4 d2_0 = (-8, -4),
    # dL/dh2 = 2 d2_0 = (4, 2), dL/dh3 = 0.
    h = H.clone().requires_grad_(True)
    pet_loss(h, torch.tensor([[1, 1, 1, 0]])).backward()
    expected = torch.tensor([[[4.0, 2.0], [-8.0, -4.0], [4.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)
    assert torch.equal(h.grad, expected)


@pytest.mark.parametrize(
    ("step", "weight"),
    [(0, 0.01), (29, 0.01), (30, 0.1), (31, 0.1), (69, 0.1), (70, 1.0), (99, 1.0), (100, 1.0)],
)
def test_schedule_phase_boundaries(step, weight):
    # 100 steps: phase 1 is steps 0..29 (< 30 %), phase 2 steps 30..69 (< 70 %), phase 3 from step 70.
    assert pet_schedule(step, 100) == weight


def test_schedule_boundaries_with_uneven_total():
    # 7 steps: 30 % = 2.1 -> steps 0, 1, 2 are phase 1; 70 % = 4.9 -> steps 3, 4 phase 2; 5, 6 phase 3.
    assert [pet_schedule(s, 7) for s in range(7)] == [0.01, 0.01, 0.01, 0.1, 0.1, 1.0, 1.0]


def test_regularizer_applies_the_schedule():
    reg = PETRegularizer(total_steps=100)
    assert reg(H, None, step=10).item() == pytest.approx(0.01 * 6.5)
    assert reg(H, None, step=50).item() == pytest.approx(0.1 * 6.5)
    assert reg(H, None, step=90).item() == pytest.approx(6.5)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        pet_schedule(0, 0)
    with pytest.raises(ValueError):
        pet_schedule(-1, 10)
    with pytest.raises(ValueError):
        pet_loss(torch.zeros(4, 2))
