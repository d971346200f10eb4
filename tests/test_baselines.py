"""Single-frame progress regressor: shapes, save/load round trip, bad checkpoints, learning."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wvm_ros.core.baselines import (
    BaselineLoadError,
    SingleFrameConfig,
    SingleFrameRegressor,
    load_single_frame,
    save_single_frame,
    time_targets,
    train_single_frame,
)

SMALL = SingleFrameConfig(image_size=(16, 16), channels=(8, 16), hidden=16)


def bar_episode(T=12, size=24):
    """A white bar that grows with time: progress is visible in every single frame."""
    frames = np.zeros((T, size, size, 3), np.uint8)
    for t in range(T):
        frames[t, :, : int(round(size * (t + 1) / T))] = 255
    return frames


def test_time_targets():
    np.testing.assert_allclose(time_targets(4), [0, 1 / 3, 2 / 3, 1])


def test_predict_shapes_and_range():
    torch.manual_seed(0)
    m = SingleFrameRegressor(SMALL)
    p = m.predict(bar_episode(5, size=20))
    assert p.shape == (5,) and p.dtype == np.float32
    assert np.all((p >= 0) & (p <= 1))
    assert m.predict(np.zeros((1, 16, 16, 3), np.uint8)).shape == (1,)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        m.predict(np.zeros((2, 16, 16), np.uint8))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    m = SingleFrameRegressor(SMALL)
    frames = bar_episode()
    save_single_frame(m, tmp_path / "ck", training={"steps": 0})
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert meta["kind"] == "single_frame_regressor" and meta["num_parameters"] == m.num_parameters()
    m2 = load_single_frame(tmp_path / "ck")
    np.testing.assert_array_equal(m.predict(frames), m2.predict(frames))
    assert m2.checkpoint_id == meta["checkpoint_id"] and not m2.untrained


def test_load_errors(tmp_path):
    with pytest.raises(BaselineLoadError, match="not a directory"):
        load_single_frame(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaselineLoadError, match="missing config.json"):
        load_single_frame(tmp_path / "empty")
    save_single_frame(SingleFrameRegressor(SMALL), tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    cfg["config"]["channels"] = [8, 32]
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BaselineLoadError, match="do not match"):
        load_single_frame(tmp_path / "ck")
    cfg["kind"] = "wvm"
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BaselineLoadError, match="expected 'single_frame_regressor'"):
        load_single_frame(tmp_path / "ck")


def test_training_learns_progress_from_single_frames():
    eps = [bar_episode(12) for _ in range(3)]
    model, res = train_single_frame(eps, config=SMALL, steps=150, batch_size=32, lr=3e-3, progress=False)
    assert res.final_loss < res.first_loss * 0.3
    pred = model.predict(bar_episode(12))
    err = np.abs(pred - time_targets(12))
    assert err.mean() < 0.08, (pred, err)


def test_training_bad_input():
    with pytest.raises(ValueError, match="no episodes"):
        train_single_frame([], config=SMALL, steps=1, progress=False)
    with pytest.raises(ValueError, match="targets"):
        train_single_frame([bar_episode(4)], targets=[np.zeros(3)], config=SMALL, steps=1, progress=False)
