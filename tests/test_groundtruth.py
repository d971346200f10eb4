"""The paper's ground-truth curves on hand-computed cases."""
import numpy as np
import pytest

from wvm_ros.core.groundtruth import (
    expert_progress,
    ground_truth_progress,
    hesitation_progress,
    piecewise_linear,
    retry_progress,
    value_chunks,
)


def test_expert_is_end_inclusive_linear():
    v = expert_progress(5)
    assert v.dtype == np.float32
    np.testing.assert_allclose(v, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(expert_progress(2), [0, 1])


def test_hesitation_hand_computed():
    # T = 11, [m, n] = [3, 5], x = 2: v_m = v_n = 3 / (11 - 1 - 2) = 0.375
    v = hesitation_progress(11, 3, 5)
    expected = [0, 0.125, 0.25, 0.375, 0.375, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
    np.testing.assert_allclose(v, expected, atol=1e-6)
    # same slope before and after the flat part
    assert np.allclose(np.diff(v)[:3], 0.125) and np.allclose(np.diff(v)[5:], 0.125)


def test_retry_hand_computed():
    # T = 12, [m, n] = [4, 6], x = 2: v_m = 4 / 8 = 0.5, v_n = (4 - 2) / 8 = 0.25
    v = retry_progress(12, 4, 6)
    expected = [0, 0.125, 0.25, 0.375, 0.5, 0.375, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0]
    np.testing.assert_allclose(v, expected, atol=1e-6)


def test_retry_clamps_at_zero():
    # T = 20, [m, n] = [2, 6], x = 4: v_m = 2 / 12, v_n = max(0, -2 / 12) = 0
    v = retry_progress(20, 2, 6)
    assert v[2] == pytest.approx(2 / 12) and v[6] == 0.0
    assert v[-1] == 1.0 and v.min() >= 0.0


def test_dispatch_and_errors():
    np.testing.assert_allclose(ground_truth_progress(4, "expert"), [0, 1 / 3, 2 / 3, 1], atol=1e-6)
    np.testing.assert_allclose(ground_truth_progress(11, "hesitation", (3, 5)), hesitation_progress(11, 3, 5))
    with pytest.raises(ValueError, match="segment"):
        ground_truth_progress(10, "retry")
    with pytest.raises(ValueError, match="kind"):
        ground_truth_progress(10, "nap", (1, 2))
    with pytest.raises(ValueError, match="m < n"):
        hesitation_progress(10, 5, 5)
    with pytest.raises(ValueError, match="T-1 = 9"):
        retry_progress(10, 2, 10)
    with pytest.raises(ValueError, match="T - 2x"):
        retry_progress(10, 1, 6)
    with pytest.raises(ValueError, match="T"):
        expert_progress(1)
    with pytest.raises(ValueError, match="increasing"):
        piecewise_linear(5, [(0, 0), (3, 1), (2, 1)])


def test_value_chunks_end_at_frame_and_padded():
    c = value_chunks([0.0, 0.5, 1.0], 2)
    np.testing.assert_allclose(c, [[0, 0], [0, 0.5], [0.5, 1.0]])
    np.testing.assert_allclose(value_chunks([0.1, 0.2, 0.3, 0.4], 3)[3], [0.2, 0.3, 0.4])
    assert c.dtype == np.float32 and value_chunks([0.2], 4).shape == (1, 4)
    with pytest.raises(ValueError, match="h"):
        value_chunks([0.1], 0)
