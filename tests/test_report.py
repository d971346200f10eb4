"""wvm report: outcomes from the episode sidecar or next.success, final progress, the PNG."""
from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from wvm_ros.core.dataset import ValuedDatasetWriter

    root = tmp_path_factory.mktemp("r") / "ds"
    w = ValuedDatasetWriter(root, image_shapes={"observation.image": (4, 4, 3)}, state=2, action=2,
                            use_videos=False, default_task="push", extra_scalars={"ground_truth_progress": "float32"})
    img = np.zeros((4, 4, 3), np.uint8)
    curves = [([0.1, 0.5, 0.97], "success"), ([0.0, 0.2, 0.1, 0.3], "failure")]
    for ep, (vals, outcome) in enumerate(curves):
        for i, v in enumerate(vals):
            last = i == len(vals) - 1
            w.add_frame({"observation.image": img}, [0, 0], [0, 0], progress=v, success=last and outcome == "success",
                        done=last, ground_truth_progress=v / 2)
        w.end_episode(metadata={"outcome": outcome, "bag": f"ep_att{ep + 1:03d}"} if ep == 0 else None)
    w.finalize()
    return root


def test_report_outcomes_and_png(dataset, tmp_path):
    from wvm_ros.core.report import dataset_report, write_report

    eps = dataset_report(dataset)
    assert [(e.episode_index, e.frames, e.outcome) for e in eps] == [(0, 3, "success"), (1, 4, "failure")]
    assert eps[0].final_progress == pytest.approx(0.97) and eps[1].final_progress == pytest.approx(0.3)
    assert eps[1].max_progress == pytest.approx(0.3)
    assert eps[0].final_ground_truth == pytest.approx(0.485)
    assert eps[0].source == "ep_att001" and eps[1].source == ""   # outcome of ep 1 from next.success
    assert eps[0].task == "push"
    _, out = write_report(dataset, tmp_path / "rep")
    png = (out / "progress_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    j = json.loads((out / "report.json").read_text())
    assert j[1]["outcome"] == "failure"
    assert "| 0 | ep_att001 | 3 | success | 0.970 |" in (out / "report.md").read_text()


def test_report_cli_and_errors(dataset, tmp_path, capsys):
    from wvm_ros.cli.main import main

    assert main(["report", str(dataset), "-o", str(tmp_path / "r")]) == 0
    assert "2 episodes, 1 successful (50 %)" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing")]) == 1
    assert "not a LeRobot dataset" in capsys.readouterr().err
    assert main(["report", str(dataset), "--value-column", "nope"]) == 1
    assert "has no 'nope' column" in capsys.readouterr().err
