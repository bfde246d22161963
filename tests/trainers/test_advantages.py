"""Tests for arena.trainers.advantages, against numbers worked out by hand in the comments."""

from __future__ import annotations

import json

import pytest
import torch

from arena.trainers.advantages import (
    ADVANTAGES,
    RoleBaseline,
    group_advantages_grpo,
    group_advantages_mean,
    group_advantages_rloo,
    no_baseline,
    seat_returns,
    whiten,
)

# Two groups of different sizes, interleaved, with non-contiguous ids:
#   group 7: episodes 0, 2, 3 with returns 1, 3, 5   -> mean 3
#   group 2: episodes 1, 4    with returns 2, 6      -> mean 4
RETURNS = torch.tensor([1.0, 2.0, 3.0, 5.0, 6.0])
GROUPS = torch.tensor([7, 2, 7, 7, 2])


def test_dict_names_every_variant():
    assert ADVANTAGES == {
        "group_mean": group_advantages_mean,
        "grpo": group_advantages_grpo,
        "rloo": group_advantages_rloo,
        "none": no_baseline,
    }
    for fn in ADVANTAGES.values():
        assert fn(RETURNS, GROUPS).shape == (5,)


def test_group_mean_by_hand():
    # [1-3, 2-4, 3-3, 5-3, 6-4]
    expected = torch.tensor([-2.0, -2.0, 0.0, 2.0, 2.0])
    torch.testing.assert_close(group_advantages_mean(RETURNS, GROUPS), expected)


def test_grpo_by_hand():
    # group 7: deviations -2, 0, 2; population var = 8/3; 2 / sqrt(8/3) = sqrt(3/2) = 1.2247449
    # group 2: deviations -2, 2;    population var = 4;   std 2 -> -1, 1
    expected = torch.tensor([-1.2247449, -1.0, 0.0, 1.2247449, 1.0])
    torch.testing.assert_close(group_advantages_grpo(RETURNS, GROUPS, eps=0.0), expected)
    # The default eps=1e-6 moves these by < 1e-5.
    torch.testing.assert_close(group_advantages_grpo(RETURNS, GROUPS), expected, atol=1e-5, rtol=0)


def test_rloo_by_hand():
    # group 7: 1 - mean(3, 5) = -3; 3 - mean(1, 5) = 0; 5 - mean(1, 3) = 3
    # group 2: 2 - 6 = -4; 6 - 2 = 4
    expected = torch.tensor([-3.0, -4.0, 0.0, 3.0, 4.0])
    torch.testing.assert_close(group_advantages_rloo(RETURNS, GROUPS), expected)


def test_no_baseline_returns_as_they_are():
    out = no_baseline(RETURNS, GROUPS)
    torch.testing.assert_close(out, torch.tensor([1.0, 2.0, 3.0, 5.0, 6.0]))
    out[0] = 100.0  # a copy, not a view of the caller's tensor
    assert RETURNS[0] == 1.0


def test_group_of_one():
    # episode 0 is alone in group 0; group 1 holds returns 1 and 3 (mean 2, population std 1)
    returns = torch.tensor([4.0, 1.0, 3.0])
    groups = torch.tensor([0, 1, 1])
    torch.testing.assert_close(group_advantages_rloo(returns, groups), torch.tensor([0.0, -2.0, 2.0]))
    torch.testing.assert_close(group_advantages_grpo(returns, groups, eps=0.0), torch.tensor([0.0, -1.0, 1.0]))
    torch.testing.assert_close(group_advantages_mean(returns, groups), torch.tensor([0.0, -1.0, 1.0]))


def test_grpo_zero_std_group_is_exactly_zero():
    # Six returns of 0.3: in float32 sum/6 differs from 0.3 by 3e-8, so a naive
    # (x - mean) / std would give ±1 for pure rounding noise.
    returns = torch.tensor([0.3] * 6 + [1.0, 3.0])
    groups = torch.tensor([0] * 6 + [1, 1])
    out = group_advantages_grpo(returns, groups, eps=0.0)
    assert torch.equal(out[:6], torch.zeros(6))
    torch.testing.assert_close(out[6:], torch.tensor([-1.0, 1.0]))
    assert torch.isfinite(out).all()


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="group_ids"):
        group_advantages_mean(RETURNS, GROUPS[:4])
    with pytest.raises(ValueError, match="1-D"):
        group_advantages_grpo(RETURNS.reshape(1, 5), GROUPS.reshape(1, 5))


def test_empty_batch():
    empty = torch.zeros(0)
    ids = torch.zeros(0, dtype=torch.long)
    for fn in ADVANTAGES.values():
        assert fn(empty, ids).shape == (0,)


def test_whiten():
    # [1, 3]: mean 2, population std 1 -> [-1, 1]; without the shift the mean 2 is added back.
    torch.testing.assert_close(whiten(torch.tensor([1.0, 3.0]), eps=0.0), torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(whiten(torch.tensor([1.0, 3.0]), eps=0.0, shift_mean=False), torch.tensor([1.0, 3.0]))


# --------------------------------------------------------------------------- #
# RoleBaseline
# --------------------------------------------------------------------------- #

SELLER = "negotiation-v0/seller"
BUYER = "negotiation-v0/buyer"


def test_role_baseline_ema_sequence():
    b = RoleBaseline(decay=0.9)
    assert b.value(SELLER) == 0.0  # unseen
    b.update(SELLER, [2.0, 4.0])  # first observation initialises: mean 3
    assert b.value(SELLER) == pytest.approx(3.0)
    b.update(SELLER, [13.0])  # 0.9 * 3 + 0.1 * 13 = 2.7 + 1.3
    assert b.value(SELLER) == pytest.approx(4.0)
    b.update(SELLER, torch.tensor([-6.0, -4.0]))  # 0.9 * 4 + 0.1 * (-5) = 3.6 - 0.5
    assert b.value(SELLER) == pytest.approx(3.1)
    assert b.value(BUYER) == 0.0  # keys are independent


def test_role_baseline_subtract_uses_pre_update_value():
    b = RoleBaseline(decay=0.9)
    b.update(SELLER, [3.0])
    out = b.subtract(torch.tensor([5.0, 1.0, 10.0]), [SELLER, BUYER, SELLER])
    # seller baseline 3 before this batch, buyer unseen (0)
    torch.testing.assert_close(out, torch.tensor([2.0, 1.0, 7.0]))
    # then updated: seller 0.9 * 3 + 0.1 * mean(5, 10) = 2.7 + 0.75; buyer initialised to 1
    assert b.value(SELLER) == pytest.approx(3.45)
    assert b.value(BUYER) == pytest.approx(1.0)


def test_role_baseline_subtract_without_update():
    b = RoleBaseline()
    b.update(SELLER, [3.0])
    out = b.subtract(torch.tensor([5.0]), [SELLER], update=False)
    torch.testing.assert_close(out, torch.tensor([2.0]))
    assert b.value(SELLER) == 3.0
    assert b.value(BUYER) == 0.0
    with pytest.raises(ValueError, match="one key per element"):
        b.subtract(torch.tensor([5.0, 1.0]), [SELLER])


def test_role_baseline_state_dict_round_trip_through_json():
    b = RoleBaseline(decay=0.8)
    b.update(SELLER, [2.0])
    b.update(BUYER, [-1.0, -3.0])
    state = json.loads(json.dumps(b.state_dict()))
    assert state == {"decay": 0.8, "values": {SELLER: 2.0, BUYER: -2.0}}

    restored = RoleBaseline()  # default decay 0.9, overwritten by the checkpoint
    restored.load_state_dict(state)
    assert restored.decay == 0.8
    # Continues the same EMA: seller 0.8 * 2 + 0.2 * 7 = 3.0
    restored.update(SELLER, [7.0])
    assert restored.value(SELLER) == pytest.approx(3.0)
    assert restored.value(BUYER) == pytest.approx(-2.0)


def test_role_baseline_rejects_bad_input():
    with pytest.raises(ValueError, match="decay"):
        RoleBaseline(decay=1.5)
    with pytest.raises(ValueError, match="at least one"):
        RoleBaseline().update(SELLER, [])


# --------------------------------------------------------------------------- #
# seat_returns
# --------------------------------------------------------------------------- #


def test_seat_returns_mixes():
    own = torch.tensor([10.0, 0.0])
    group = torch.tensor([4.0, 4.0])
    torch.testing.assert_close(seat_returns(own, group, 0.0), torch.tensor([10.0, 0.0]))
    torch.testing.assert_close(seat_returns(own, group, 1.0), torch.tensor([4.0, 4.0]))
    # 0.75 * 10 + 0.25 * 4 = 8.5; 0.75 * 0 + 0.25 * 4 = 1
    torch.testing.assert_close(seat_returns(own, group, 0.25), torch.tensor([8.5, 1.0]))


@pytest.mark.parametrize("mix", [-0.1, 1.5, float("nan")])
def test_seat_returns_rejects_mix_outside_unit_interval(mix):
    with pytest.raises(ValueError, match="mix"):
        seat_returns(torch.zeros(2), torch.zeros(2), mix)
