"""The value offset: fitted on validation splits (`wvm calibrate-value`), stored in the
checkpoint's config.json, added to published values (never to the prefix the model is fed)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from wvm_ros.core import evaluation as E
from wvm_ros.core.model import ModelLoadError, build_model, load_value_model, preset_config, save_checkpoint
from wvm_ros.core.model.checkpoint import read_calibration, write_calibration
from wvm_ros.core.streaming import StreamingValueEstimator, estimate_episode, resolve_value_offset
from wvm_ros.core.value_calibration import (CalibrationFitError, fit_value_offset, offset_from_predictions,
                                            rate_mismatch)

from test_eval_cli import make_dataset
from test_streaming import Spy, frames


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(preset_config("tiny", num_layers=2, sample_fps=2.0, min_frames=2)).eval()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds") / "caltest")


def _tiny_checkpoint(path, seed=0):
    torch.manual_seed(seed)
    m = build_model(preset_config("tiny", num_layers=1, image_size=(32, 32)))
    save_checkpoint(m, path, meta={"test": True})
    return path


def test_resolve_value_offset_default_override_and_errors(model):
    assert resolve_value_offset(model) == 0.0                       # a model without calibration
    spy = Spy(model)
    spy.value_offset = 0.03
    assert resolve_value_offset(spy) == pytest.approx(0.03)         # the model's own
    assert resolve_value_offset(spy, 0.0) == 0.0                    # explicit raw
    assert resolve_value_offset(spy, -0.1) == pytest.approx(-0.1)
    for bad in (float("nan"), float("inf"), 0.6, -0.51, "x"):
        with pytest.raises(ValueError, match="value_offset"):
            resolve_value_offset(spy, bad)


def test_offset_is_added_to_published_values_not_to_the_prefix(model):
    raw_spy, cal_spy = Spy(model), Spy(model)
    cal_spy.value_offset = 0.2
    raw = StreamingValueEstimator(raw_spy, "t")
    cal = StreamingValueEstimator(cal_spy, "t")
    assert cal.value_offset == pytest.approx(0.2)
    fr = frames(12, seed=3)
    r = [raw.push(fr[i], i * 0.5) for i in range(12)]
    c = [cal.push(fr[i], i * 0.5) for i in range(12)]
    # the model sees exactly the same windows and prefix values: the offset never feeds back
    assert [p for _, p, _ in raw_spy.calls] == pytest.approx([p for _, p, _ in cal_spy.calls], abs=1e-7)
    checked = 0
    for a, b in zip(r[1:], c[1:]):
        np.testing.assert_allclose(a.chunk, b.chunk, atol=1e-6)     # chunk: the raw model output
        if 0.0 < a.progress < 0.8:                                  # away from the clip at 0 and 1
            assert b.progress == pytest.approx(a.progress + 0.2, abs=1e-6)
            checked += 1
        else:
            assert 0.0 <= b.progress <= 1.0
    assert checked >= 5
    # the explicit override gives the raw values back
    again = StreamingValueEstimator(cal_spy, "t", value_offset=0.0)
    r2 = [again.push(fr[i], i * 0.5) for i in range(12)]
    assert [x.progress for x in r2[1:]] == pytest.approx([x.progress for x in r[1:]], abs=1e-7)


def test_estimate_episode_offsets_online_and_offline(model):
    fr = frames(30, seed=4)
    st = np.arange(30) * 0.1
    raw = estimate_episode(model, fr, st, "t", estimate_fps=10.0, value_offset=0.0)
    cal = estimate_episode(model, fr, st, "t", estimate_fps=10.0, value_offset=-0.05)
    for key in ("online", "smoothed"):
        a, b = raw[key], cal[key]
        ok = np.isfinite(a) & (a > 0.05)
        assert ok.any()
        np.testing.assert_allclose(b[ok], a[ok] - 0.05, atol=1e-6)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))


def test_offset_from_predictions_hand_computed():
    eps = [E.EvalEpisode(episode_index=i, task="t", frames=np.zeros((3, 2, 2, 3), np.uint8),
                         timestamps=np.arange(3) * 0.1, gt=np.array(g, float), kind="expert")
           for i, g in enumerate(([0.0, 0.5, 1.0], [0.2, 0.4, 0.6]))]
    preds = [np.array([np.nan, 0.4, 0.9]), np.array([0.1, 0.3, 0.6])]
    # errors over finite frames: -0.1, -0.1, -0.1, -0.1, 0.0 -> mean -0.08
    off, n = offset_from_predictions(eps, preds)
    assert n == 5 and off == pytest.approx(0.08)
    with pytest.raises(CalibrationFitError, match="no frame"):
        offset_from_predictions(eps, [np.full(3, np.nan), np.full(3, np.nan)])


def test_fit_value_offset_removes_the_mean_error(dataset, tmp_path):
    ck = _tiny_checkpoint(tmp_path / "ck")
    m = load_value_model(ck, preset=None)
    eps = E.load_lerobot_episodes(dataset, progress=False)
    cal = fit_value_offset(m, {"a": eps[:2], "b": eps[2:]}, estimate_fps=10.0, progress=False)
    assert cal["checkpoint_id"] == m.checkpoint_id
    assert [c["split"] for c in cal["fitted_on"]] == ["a", "b"]
    assert sum(c["frames"] for c in cal["fitted_on"]) == cal["frames"] > 0
    # minus the mean error of the raw live estimates, recomputed here from the same pass
    raw = [estimate_episode(m, e.frames, e.timestamps, e.task, estimate_fps=10.0, value_offset=0.0)["online"]
           for e in eps]
    d = np.concatenate([p - e.gt for p, e in zip(raw, eps)])
    assert cal["value_offset"] == pytest.approx(-np.nanmean(d), abs=1e-4)
    shifted = [np.clip(p + cal["value_offset"], 0, 1) for p in raw]
    d2 = np.concatenate([p - e.gt for p, e in zip(shifted, eps)])
    assert abs(np.nanmean(d2)) <= abs(np.nanmean(d)) + 1e-9
    with pytest.raises(CalibrationFitError, match="split a: no episodes"):
        fit_value_offset(m, {"a": []}, progress=False)


def test_checkpoint_round_trip_and_bad_calibration(tmp_path):
    ck = _tiny_checkpoint(tmp_path / "ck")
    m0 = load_value_model(ck, preset=None)
    assert m0.value_offset == 0.0 and m0.calibration == {}
    write_calibration(ck, {"value_offset": 0.021, "checkpoint_id": m0.checkpoint_id, "method": "test"})
    m1 = load_value_model(ck, preset=None)
    assert m1.value_offset == pytest.approx(0.021) and m1.calibration["method"] == "test"
    assert m1.checkpoint_id == m0.checkpoint_id                   # the weights are untouched
    for k, v in m0.state_dict().items():
        assert torch.equal(v, m1.state_dict()[k])
    write_calibration(ck, None)
    assert load_value_model(ck, preset=None).value_offset == 0.0
    assert "calibration" not in json.loads((ck / "config.json").read_text())
    # a calibration of other weights, or a malformed one, is refused by name
    write_calibration(ck, {"value_offset": 0.01, "checkpoint_id": "0123456789ab"})
    with pytest.raises(ModelLoadError, match="fitted for weights 0123456789ab"):
        load_value_model(ck, preset=None)
    with pytest.raises(ModelLoadError, match="value_offset must be a finite number"):
        write_calibration(ck, {"value_offset": float("nan")})
    for bad in ({"value_offset": 0.9}, {"value_offset": "0.1"}, {"offset": 0.1}, [0.1]):
        with pytest.raises(ModelLoadError, match="calibration"):
            read_calibration({"calibration": bad}, ck)


def test_cli_fit_write_dry_run_remove_and_refusals(dataset, tmp_path, capsys):
    from wvm_ros.cli.calibrate_value import HELDOUT
    from wvm_ros.cli.main import main

    ck = _tiny_checkpoint(tmp_path / "ck")
    before = (ck / "config.json").read_text()
    assert main(["calibrate-value", "--checkpoint", str(ck), "--dataset", str(dataset), "--dry-run",
                 "--no-progress", "--workers", "1"]) == 0
    assert (ck / "config.json").read_text() == before
    assert "--dry-run" in capsys.readouterr().out
    assert main(["calibrate-value", "--checkpoint", str(ck), "--dataset", str(dataset), "--no-progress",
                 "--workers", "2"]) == 0
    out = capsys.readouterr().out
    cal = json.loads((ck / "config.json").read_text())["calibration"]
    assert f"value offset {cal['value_offset']:+.4f}" in out
    assert load_value_model(ck, preset=None).value_offset == pytest.approx(cal["value_offset"])
    # wvm eval scores the published (calibrated) values by default, the raw ones on request
    for extra, off in (([], cal["value_offset"]), (["--no-calibration"], 0.0)):
        o = tmp_path / f"eval{len(extra)}"
        assert main(["eval", "--checkpoint", str(ck), "--dataset", str(dataset), "--output", str(o),
                     "--no-baselines", "--no-progress", "--workers", "1", "--plots-per-kind", "0", *extra]) == 0
        js = json.loads((o / "metrics.json").read_text())
        assert js["model"]["info"]["value_offset"] == pytest.approx(off)
        assert js["baselines"]["wvm_offline"]["info"]["value_offset"] == pytest.approx(off)
        assert "was fitted at" not in capsys.readouterr().err
    # scored at another rate than the offset was fitted at: said
    assert main(["eval", "--checkpoint", str(ck), "--dataset", str(dataset), "--output", str(tmp_path / "e2"),
                 "--no-baselines", "--no-progress", "--workers", "1", "--plots-per-kind", "0",
                 "--estimate-fps", "0"]) == 0
    assert "was fitted at 10 estimates/s, used at 2" in capsys.readouterr().err
    assert main(["calibrate-value", "--checkpoint", str(ck), "--remove"]) == 0
    assert "calibration" not in json.loads((ck / "config.json").read_text())
    # refusals, each naming what was expected
    assert main(["calibrate-value", "--checkpoint", str(ck), "--dataset", str(HELDOUT)]) == 2
    assert "held-out split" in capsys.readouterr().err
    assert main(["calibrate-value", "--checkpoint", str(ck)]) == 2
    assert "at least one --dataset" in capsys.readouterr().err
    assert main(["calibrate-value", "--checkpoint", str(tmp_path / "nope"), "--dataset", str(dataset)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["calibrate-value", "--checkpoint", str(ck), "--dataset", str(tmp_path / "nods"),
                 "--no-progress"]) == 2
    assert "nods" in capsys.readouterr().err


def test_rate_mismatch_says_both_rates():
    assert rate_mismatch(None, 10.0) == "" and rate_mismatch({}, 10.0) == ""
    assert rate_mismatch({"estimate_fps": 10.0}, 10.0) == ""
    note = rate_mismatch({"estimate_fps": 10.0}, 2.0)
    assert "fitted at 10 estimates/s, used at 2" in note and "--estimate-fps 2" in note
