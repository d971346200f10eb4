"""Value metrics on hand-computed cases (WVM_NOTES.md, "Metrics")."""
from __future__ import annotations

import math

import numpy as np
import pytest

from wvm_ros.core import metrics as M


def piecewise_gt(T, m, n, vm, vn):
    """The paper's 4-point piecewise-linear curve (0 at 0, vm at m, vn at n, 1 at T-1)."""
    return np.interp(np.arange(T), [0, m, n, T - 1], [0.0, vm, vn, 1.0])


def retry_gt(T, m, n):
    x = n - m
    return piecewise_gt(T, m, n, m / (T - 2 * x), max(0.0, (m - x) / (T - 2 * x)))


def hesitation_gt(T, m, n):
    x = n - m
    v = m / (T - 1 - x)
    return piecewise_gt(T, m, n, v, v)


def test_voc_monotone_and_reversed():
    assert M.voc([0.1, 0.2, 0.5, 0.9]) == pytest.approx(1.0)
    assert M.voc([0.9, 0.5, 0.2, 0.1]) == pytest.approx(-1.0)
    # any strictly increasing curve is a perfect order, whatever its shape
    assert M.voc(np.exp(np.arange(20))) == pytest.approx(1.0)


def test_voc_ties_use_average_ranks():
    # ranks (1.5, 1.5, 3.5, 3.5) vs (1, 2, 3, 4): rho = 4 / (2 * sqrt(5))
    assert M.voc([0.0, 0.0, 1.0, 1.0]) == pytest.approx(2 / math.sqrt(5))


def test_voc_hand_computed_permutation():
    # ranks (2, 1, 3) vs (1, 2, 3): d = (1, -1, 0), rho = 1 - 6*2 / (3*8) = 0.5
    assert M.voc([0.5, 0.2, 0.9]) == pytest.approx(0.5)


def test_voc_constant_is_zero_and_short_is_nan():
    assert M.voc([0.3] * 10) == 0.0
    assert math.isnan(M.voc([0.3]))
    assert math.isnan(M.voc([]))


def test_voc_drops_nan_frames():
    assert M.voc([np.nan, np.nan, 0.1, 0.2, 0.3]) == pytest.approx(1.0)
    assert M.voc([np.nan, 0.2, 0.1]) == pytest.approx(-1.0)


def test_voc_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        M.voc(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="lengths differ"):
        M.voc([1, 2, 3], order=[1, 2])


def test_blind_clock():
    np.testing.assert_allclose(M.blind_clock(5), [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(M.blind_clock(1), [0.0])
    with pytest.raises(ValueError):
        M.blind_clock(0)


def test_retry_gt_and_windows():
    gt = retry_gt(10, 4, 6)
    # v_m = 4/6, v_n = 2/6
    assert gt[4] == pytest.approx(4 / 6) and gt[6] == pytest.approx(2 / 6) and gt[9] == 1.0
    assert M.decreasing_windows(gt) == [(4, 6)]
    assert M.decreasing_windows([0, 1, 0.5, 0.4, 0.8, 0.2]) == [(1, 3), (4, 5)]
    assert M.decreasing_windows([0, 0.5, 0.5, 1]) == []


def test_retry_voc_clock_perfect_flat():
    T, m, n = 10, 4, 6
    gt = retry_gt(T, m, n)
    assert M.retry_voc(M.blind_clock(T), gt) == pytest.approx(-1.0)
    assert M.retry_voc(gt, gt) == pytest.approx(1.0)
    flat = gt.copy()
    flat[m : n + 1] = 0.5
    assert M.retry_voc(flat, gt) == 0.0
    # no decreasing window -> NaN
    assert math.isnan(M.retry_voc(M.blind_clock(T), M.blind_clock(T)))


def test_retry_voc_hand_computed_and_mean_over_windows():
    gt = [0.2, 0.66, 0.5, 0.33, 0.9]  # window (1, 3)
    pred = [0.0, 0.5, 0.7, 0.6, 1.0]
    # window pred ranks (1, 3, 2), gt ranks (3, 2, 1): d = (-2, 1, 1), rho = 1 - 36/24 = -0.5
    assert M.retry_voc(pred, gt) == pytest.approx(-0.5)
    gt2 = [0.5, 0.4, 0.3, 0.6, 0.5, 0.4]  # windows (0, 2) and (3, 5)
    pred2 = [0.5, 0.4, 0.3, 0.1, 0.2, 0.3]  # +1 on the first, -1 on the second
    assert M.retry_voc(pred2, gt2) == pytest.approx(0.0)


def test_hesitation_gt_and_rmse_of_clock():
    T, m, n = 10, 3, 5
    gt = hesitation_gt(T, m, n)
    assert gt[3] == gt[4] == gt[5] == pytest.approx(3 / 7)
    # clock 3/9, 4/9, 5/9 vs 3/7: errors (-6, 1, 8)/63
    expected = math.sqrt((36 + 1 + 64) / 3) / 63
    assert M.hesitation_rmse(M.blind_clock(T), gt, [(m, n)]) == pytest.approx(expected)
    assert M.hesitation_rmse(gt, gt, [(m, n)]) == pytest.approx(0.0)
    assert math.isnan(M.hesitation_rmse(gt, gt, []))
    with pytest.raises(ValueError, match="outside"):
        M.hesitation_rmse(gt, gt, [(8, 12)])


def test_hesitation_rmse_pools_segments_and_skips_nan():
    gt = np.zeros(8)
    pred = np.array([0, 1, 0, 0, 0, 0, 2, np.nan])
    # frames 1 and 6, 7 (7 unscored): errors 1 and 2 -> sqrt(5/2)
    assert M.hesitation_rmse(pred, gt, [(1, 1), (6, 7)]) == pytest.approx(math.sqrt(2.5))


def test_score_episode_and_aggregate():
    T = 10
    clock = M.blind_clock(T)
    scores = [
        M.score_episode(clock, clock, "expert", episode_index=0, task="a"),
        M.score_episode(clock, retry_gt(T, 4, 6), "retry", episode_index=1, task="a"),
        M.score_episode(clock, hesitation_gt(T, 3, 5), "hesitation", [(3, 5)], episode_index=2, task="a"),
        M.score_episode(clock[::-1], clock, "expert", episode_index=3, task="b"),
    ]
    assert scores[0].expert_voc == pytest.approx(1.0)
    assert math.isnan(scores[0].retry_voc) and math.isnan(scores[1].expert_voc)
    assert scores[1].retry_voc == pytest.approx(-1.0)
    assert scores[2].hesitation_rmse == pytest.approx(math.sqrt((36 + 1 + 64) / 3) / 63)
    assert scores[0].as_dict()["retry_voc"] is None
    agg = M.aggregate(scores)
    assert agg.per_task["a"]["expert_voc"] == pytest.approx(1.0)
    assert agg.per_task["b"]["expert_voc"] == pytest.approx(-1.0)
    # tasks count once each: (1 + -1) / 2
    assert agg.overall["expert_voc"] == pytest.approx(0.0)
    # retry only in task a
    assert agg.overall["retry_voc"] == pytest.approx(-1.0)
    assert agg.counts["a"]["expert_voc"] == 1 and agg.counts["b"]["retry_voc"] == 0
    assert math.isnan(agg.per_task["b"]["hesitation_rmse"])
