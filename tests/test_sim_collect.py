"""`wvm sim-collect` end to end on a tiny dataset."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from wvm_ros.cli.main import main
from wvm_ros.core.dataset import read_episode_metadata
from wvm_ros.core.groundtruth import hesitation_progress, retry_progress


def test_sim_collect_tiny(tmp_path, capsys):
    out = tmp_path / "pusht"
    rc = main(["sim-collect", "--output", str(out), "--episodes", "3", "--kinds", "expert,hesitation,retry",
               "--seed", "0", "--image-size", "32", "--video", "no", "--quiet", "--value-horizon", "3"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["episodes"] == 3 and summary["scripted_expert_success"]["rate"] > 0.5
    assert json.loads((out / "meta" / "wvm_sim_collect.json").read_text())["frames"] == summary["frames"]

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/pusht_wvm", root=out)
    assert ds.num_episodes == 3 and len(ds) == summary["frames"]
    meta = read_episode_metadata(out)
    assert [m["kind"] for m in meta] == ["expert", "hesitation", "retry"]
    table = ds.hf_dataset.with_format("numpy")
    for m in meta:
        sl = slice(m["index_from"], m["index_from"] + m["length"])
        prog = np.asarray(table["progress"][sl]).reshape(-1)
        seg = np.asarray(table["segment"][sl]).reshape(-1)
        T = m["length"]
        assert prog[0] == 0.0 and prog[-1] == pytest.approx(1.0)
        assert bool(np.asarray(table["next.done"][sl]).reshape(-1)[-1])
        assert bool(np.asarray(table["next.success"][sl]).reshape(-1)[-1])
        if m["kind"] == "expert":
            np.testing.assert_allclose(prog, np.arange(T) / (T - 1), atol=1e-6)
            assert not seg.any()
        else:
            a, b = m["segment"]
            code = 1 if m["kind"] == "hesitation" else 2
            assert (seg[a:b] == code).all() and (seg[:a] == 0).all() and (seg[b:] == 0).all()
            fn = hesitation_progress if m["kind"] == "hesitation" else retry_progress
            np.testing.assert_allclose(prog, fn(T, a, b), atol=1e-6)
        chunk = np.asarray(table["value_chunk"][sl])
        assert chunk.shape == (T, 3)
        np.testing.assert_allclose(chunk[:, -1], prog, atol=1e-6)
        np.testing.assert_allclose(chunk[2:, 0], prog[:-2], atol=1e-6)
        cov = np.asarray(table["progress_coverage"][sl]).reshape(-1)
        assert cov[0] == 0.0 and cov[-1] == 1.0
    item = ds[0]
    assert tuple(item["observation.image"].shape) == (3, 32, 32)
    sarm = pq.read_table(out / "sarm_progress.parquet").to_pandas()
    assert len(sarm) == len(ds)
    np.testing.assert_allclose(sarm["progress_sparse"], np.asarray(table["progress"]).reshape(-1), atol=1e-6)


def test_sim_collect_rejects_bad_kind(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["sim-collect", "--output", str(tmp_path / "x"), "--kinds", "expert,nap"])
    assert "nap" in capsys.readouterr().err


def test_label_rejects_unusable_attempts():
    from wvm_ros.cli.sim_collect import _label
    from wvm_ros.core.sim.pusht import GOAL_POSE
    from wvm_ros.core.sim.rollout import Rollout

    T = 20
    states = np.tile(np.r_[[50.0, 50.0], GOAL_POSE], (T, 1))
    states[:, 2] += np.linspace(100, 0, T)  # the block approaches the goal steadily

    def ro(segments, solved=True):
        z = np.zeros(T)
        return Rollout(states=states, velocities=np.zeros((T, 2)), actions=np.zeros((T, 2)), coverage=z,
                       progress_coverage=z, segment_codes=z.astype(np.int64), success=z.astype(bool),
                       segments=segments, solved=solved)

    assert _label(ro([("retry", 5, 9)]), "retry", 20.0)[2] == "retry did not set the block back"
    assert _label(ro([("hesitation", 5, 9)]), "hesitation", 20.0)[2] == "block moved during hesitation"
    assert _label(ro([], solved=False), "expert", 20.0)[2] == "not solved"
    assert _label(ro([]), "retry", 20.0)[2] == "retry not reached before success"
    prog, segs, why = _label(ro([]), "expert", 20.0)
    assert why is None and prog[-1] == 1.0 and segs == []
    states[7:, 2] = 100.0  # hold still from frame 7 on: a real hesitation [7, 12]
    states[12:, 2] = np.linspace(100, 0, T - 12)
    prog, segs, why = _label(ro([("hesitation", 7, 12)]), "hesitation", 20.0)
    assert why is None and prog[7] == prog[12]


def test_sim_collect_after_success_keeps_recording_with_progress_one(tmp_path, capsys):
    out = tmp_path / "pusht"
    rc = main(["sim-collect", "--output", str(out), "--episodes", "2", "--kinds", "expert,retry", "--seed", "0",
               "--image-size", "32", "--video", "no", "--quiet", "--after-success-s", "1.5"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["after_success_s"] == 1.5
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    table = LeRobotDataset("local/pusht_wvm", root=out).hf_dataset.with_format("numpy")
    for m in read_episode_metadata(out):
        sl = slice(m["index_from"], m["index_from"] + m["length"])
        prog = np.asarray(table["progress"][sl]).reshape(-1)
        k = m["first_success_frame"]
        assert m["length"] == k + 1 + 15                     # 1.5 s at 10 fps past the first solved frame
        np.testing.assert_allclose(prog[k:], 1.0)
        assert np.all(prog[:k] < 1.0) and prog[0] == 0.0
        if m["kind"] == "expert":                           # the paper's curve over frames 0..k
            np.testing.assert_allclose(prog[:k + 1], np.arange(k + 1) / k, atol=1e-6)
        else:
            m_, n_ = m["segment"]
            np.testing.assert_allclose(prog[:k + 1], retry_progress(k + 1, m_, n_), atol=1e-6)
    assert main(["sim-collect", "--output", str(tmp_path / "x"), "--after-success-s", "-1", "--quiet"]) == 2
    assert "--after-success-s" in capsys.readouterr().err
