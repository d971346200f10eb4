"""scripts/analysis/value_bias.py: the live estimate's bias profile and a constant offset, on a
tiny generated dataset with the shipped checkpoint."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from test_eval_cli import make_dataset

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "models" / "wvm-tiny-pusht"


def _script():
    spec = importlib.util.spec_from_file_location("value_bias", ROOT / "scripts" / "analysis" / "value_bias.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not (CKPT / "model.safetensors").exists(), reason="shipped checkpoint not present")
def test_value_bias_reports_profile_chunk_errors_and_offset(tmp_path):
    from wvm_ros.core import evaluation as E

    ds = make_dataset(tmp_path / "ds", kinds=("expert", "hesitation", "retry", "expert"))
    vb = _script()
    assert vb.main(["--checkpoint", str(CKPT), "--dataset", str(ds), "--fit-dataset", str(ds),
                    "--output", str(tmp_path / "out")]) == 0
    rep = json.loads((tmp_path / "out" / "value_bias.json").read_text())
    assert set(rep["error_profile"]) >= {"expert", "hesitation", "retry", "hesitation_frames"}
    assert rep["error_profile"]["expert"]["episodes"] == 2 and len(rep["error_profile"]["expert"]["per_tenth"]) == 10
    assert len(rep["chunk_position_errors_gt_prefix"]) == 4
    # the offset is minus the mean error over the fit split's frames: recomputed here
    from wvm_ros.core.model import load_value_model

    eps = E.load_lerobot_episodes(ds, progress=False)
    preds = vb.live_predictions(load_value_model(str(CKPT)), eps)
    d = np.concatenate([p - ep.gt for ep, p in zip(eps, preds)])
    assert rep["offset"]["offset"] == pytest.approx(-d[np.isfinite(d)].mean(), abs=1e-9)
    assert rep["error_profile"]["expert"]["all_frames"] == pytest.approx(
        np.nanmean(np.concatenate([p - ep.gt for ep, p in zip(eps, preds) if ep.kind == "expert"])), abs=1e-9)
    assert set(rep["offset"]["metrics_with_offset"]) == {"expert_voc", "retry_voc", "hesitation_rmse"}
    assert rep["estimate_fps"] == 10.0   # as wvm eval and the value node; 0 = the paper's 2 Hz stream
    # the model's own (raw) estimate, without the shipped checkpoint's value offset
    from wvm_ros.core.streaming import estimate_episode

    model = load_value_model(str(CKPT))
    assert model.value_offset != 0.0
    raw = estimate_episode(model, eps[0].frames, eps[0].timestamps, eps[0].task, estimate_fps=10.0, value_offset=0.0)
    np.testing.assert_allclose(preds[0], raw["online"], equal_nan=True)
    paper = vb.live_predictions(load_value_model(str(CKPT)), eps[:1], 0)
    assert np.isfinite(paper[0]).sum() > 0 and not np.allclose(paper[0], preds[0], equal_nan=True)


@pytest.mark.skipif(not (CKPT / "model.safetensors").exists(), reason="shipped checkpoint not present")
def test_prefix_loop_feeds_ground_truth_or_own_estimates(tmp_path):
    import torch

    from wvm_ros.core import evaluation as E
    from wvm_ros.core.model import load_value_model

    ds = make_dataset(tmp_path / "ds", kinds=("hesitation", "expert"))
    vb = _script()
    model = load_value_model(str(CKPT))
    ep = E.load_lerobot_episodes(ds, progress=False)[0]
    gt_loop = vb.prefix_loop_predictions(model, ep, "gt")
    own_loop = vb.prefix_loop_predictions(model, ep, "own")
    h = model.config.h
    T = len(ep.gt)
    stride = max(1, round((1.0 / float(np.median(np.diff(ep.timestamps)))) / model.config.sample_fps))
    lat = model.encode_frames(ep.frames)
    text = model.embed_text(ep.task)

    def direct(t, p):
        idx = np.clip(t + np.arange(-h, 1) * stride, 0, T - 1)
        el = torch.tensor([ep.timestamps[t] - ep.timestamps[0]], dtype=torch.float32)
        return float(model.predict_chunk(lat[torch.from_numpy(idx)][None], torch.tensor([p]), text, elapsed_s=el)[0, -1])

    t = T - 1
    assert gt_loop[t] == pytest.approx(direct(t, float(ep.gt[t - h * stride])), abs=1e-6)
    assert own_loop[t] == pytest.approx(direct(t, float(own_loop[t - h * stride])), abs=1e-6)
    assert ep.gt[0] == 0.0  # so both loops feed 0 before the first full window
    assert np.allclose(gt_loop[:h * stride], own_loop[:h * stride], atol=1e-6)
    with pytest.raises(ValueError, match="prefix must be"):
        vb.prefix_loop_predictions(model, ep, "oracle")
    assert vb.main(["--checkpoint", str(CKPT), "--dataset", str(ds), "--output", str(tmp_path / "out"),
                    "--prefix-loop"]) == 0
    rep = json.loads((tmp_path / "out" / "value_bias.json").read_text())["prefix_loop"]
    assert rep["kinds"] == ["hesitation"] and rep["episodes"] == 1
    assert set(rep) == {"kinds", "episodes", "gt_prefix", "own_prefix"}
    assert rep["gt_prefix"]["metrics"]["hesitation_rmse"] is not None
    assert rep["own_prefix"]["metrics"]["retry_voc"] is None  # no retry attempt in the loop: null, not NaN
    assert "NaN" not in (tmp_path / "out" / "value_bias.json").read_text()
    with pytest.raises(SystemExit):
        vb.main(["--checkpoint", str(CKPT), "--dataset", str(ds), "--output", str(tmp_path / "out2"),
                 "--prefix-loop", "--prefix-loop-kinds", "retry"])
