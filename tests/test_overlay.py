"""ROS-free overlay drawing (wvm_ros.core.overlay)."""
import numpy as np
import pytest

from wvm_ros.core.overlay import OverlayState, draw_overlay, episode_label


def test_overlay_draws_bar_proportional_to_progress_and_leaves_input_alone():
    frame = np.full((96, 96, 3), 128, np.uint8)
    before = frame.copy()
    lo = draw_overlay(frame, OverlayState(progress=0.1, valid=True, task="push T"))
    hi = draw_overlay(frame, OverlayState(progress=0.9, valid=True, task="push T"))
    np.testing.assert_array_equal(frame, before)
    assert lo.shape == hi.shape and lo.shape[1] >= 320 and lo.dtype == np.uint8
    h, w = lo.shape[:2]
    # a row inside the bar near its right end: filled only at high progress
    row = h - 8
    x = int(w * 0.8)
    assert not np.array_equal(lo[row, x], hi[row, x])


def test_untrained_banner_is_red_and_only_when_untrained():
    frame = np.zeros((240, 320, 3), np.uint8)
    a = draw_overlay(frame, OverlayState(progress=0.5, valid=True, untrained=True))
    b = draw_overlay(frame, OverlayState(progress=0.5, valid=True, untrained=False))
    red = (a[:, :, 0] > 150) & (a[:, :, 1] < 60) & (a[:, :, 2] < 60)
    red_b = (b[:, :, 0] > 150) & (b[:, :, 1] < 60) & (b[:, :, 2] < 60)
    assert red.sum() > 320 * 10 and red_b.sum() < red.sum() / 10


def test_invalid_estimate_draws_no_fill_and_bad_frames_raise():
    frame = np.zeros((240, 320, 3), np.uint8)
    a = draw_overlay(frame, OverlayState(progress=float("nan"), valid=False, status="warming up"))
    assert a.shape == (240, 320, 3)
    with pytest.raises(ValueError, match="RGB uint8"):
        draw_overlay(np.zeros((10, 10), np.uint8), OverlayState())
    assert episode_label("ep-1", 2, "START") == "ep-1 attempt 2: START"
    assert episode_label("", 0, "") == "episode: -"


def test_success_probability_is_drawn_only_when_known():
    frame = np.zeros((240, 320, 3), np.uint8)
    none = draw_overlay(frame, OverlayState(progress=0.3, valid=True))
    nan = draw_overlay(frame, OverlayState(progress=0.3, valid=True, success=float("nan")))
    done = draw_overlay(frame, OverlayState(progress=0.3, valid=True, success=0.97))
    np.testing.assert_array_equal(none, nan)
    right = slice(int(320 * 0.7), 320)          # the bar's right end, unfilled at progress 0.3
    bar = slice(240 - 30, 240)
    assert not np.array_equal(none[bar, right], done[bar, right])
    green = (done[bar, right, 1] > 200) & (done[bar, right, 0] < 160)
    assert green.sum() > 20                      # "done 0.97" in green
    invalid = draw_overlay(frame, OverlayState(progress=None, valid=False, success=0.97))
    np.testing.assert_array_equal(invalid, draw_overlay(frame, OverlayState(progress=None, valid=False)))
