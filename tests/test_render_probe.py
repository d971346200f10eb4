"""scripts/analysis/render_resize_probe.py (docs/closing_the_loop.md): its AUC, and a tiny run of
both parts end to end (the pipeline, not the numbers)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "analysis" / "render_resize_probe.py"


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("render_resize_probe", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_auc_on_hand_made_scores(probe):
    labels = np.array([True, True, False, False])
    assert probe.auc(np.array([0.9, 0.8, 0.1, 0.2]), labels) == 1.0
    assert probe.auc(np.array([0.1, 0.2, 0.9, 0.8]), labels) == 0.0
    assert probe.auc(np.array([0.9, 0.1, 0.5, 0.5]), labels) == 0.5
    assert np.isnan(probe.auc(np.array([0.1, 0.2]), np.array([False, False])))


def test_probe_runs_end_to_end(probe, tmp_path, monkeypatch):
    imgs, cov, seeds = probe.collect([700000, 700001], 32, 0.85)
    assert set(imgs) == {"linear", "area"} and imgs["linear"].shape[1:] == (32, 32, 3)
    assert len(cov) == len(imgs["area"]) > 0 and cov.min() >= 0.85 and (cov >= 0.95).any()
    # the bilinear render is the simulator's own camera frame
    from wvm_ros.core.sim import PushTSim

    sim = PushTSim(image_size=(32, 32), difficulty=0.5)
    sim.reset(seed=700000)
    first, _, _ = probe.collect([700000], 32, 0.0)
    np.testing.assert_array_equal(first["linear"][0], sim.render())
    sim.close()
    out = tmp_path / "probe"
    monkeypatch.setattr(sys, "argv", ["probe", "--output", str(out), "--train-seeds", "2", "--test-seeds", "1",
                                      "--size", "32", "--steps", "3"])
    assert probe.main() == 0
    res = json.loads((out / "render_probe.json").read_text())
    assert set(res["methods"]) == {"linear", "area"} and "loop" not in res
    assert 0.0 <= res["methods"]["area"]["accuracy"] <= 1.0
    # the loop runs at the experiment's camera size only, and says so
    monkeypatch.setattr(sys, "argv", ["probe", "--output", str(out), "--only-loop", "--loop", "--size", "32"])
    with pytest.raises(SystemExit, match="renders 96 x 96"):
        probe.main()
    monkeypatch.setattr(sys, "argv", ["probe", "--output", str(out), "--only-loop", "--loop", "--train-seeds", "2",
                                      "--steps", "3", "--loop-episodes", "2"])
    assert probe.main() == 0
    rows = json.loads((out / "render_probe.json").read_text())["loop"]["rows"]
    assert len(rows) == 6 * 7 and all(0.0 <= r["false_success_rate"] <= 1.0 for r in rows)
