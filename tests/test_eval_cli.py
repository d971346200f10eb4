"""`wvm eval` end to end on a tiny generated LeRobot dataset, and the dataset loader."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from wvm_ros.core import evaluation as E

FPS = 10
T = 24
SEGMENT_NAMES = ["progress", "hesitation", "retry", "stuck", "random"]


def _gt(kind, m=8, n=14):
    from wvm_ros.core.groundtruth import ground_truth_progress

    return ground_truth_progress(T, kind, None if kind == "expert" else (m, n))


def make_dataset(root, size=32, kinds=("expert", "hesitation", "retry", "expert"), camera="observation.image"):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        camera: {"dtype": "video", "shape": (size, size, 3), "names": ["height", "width", "channels"]},
        "progress": {"dtype": "float32", "shape": (1,), "names": None},
        "segment": {"dtype": "int64", "shape": (1,), "names": None},  # codes as `wvm sim-collect` writes them
        "kind": {"dtype": "int64", "shape": (1,), "names": None},
    }
    kind_codes = ["expert", "hesitation", "retry", "stuck", "random"]
    ds = LeRobotDataset.create(repo_id="local/evaltest", root=root, fps=FPS, features=features, use_videos=True)
    for kind in kinds:
        gt = _gt(kind)
        for t in range(T):
            seg = 0 if kind == "expert" or not (8 <= t < 14) else SEGMENT_NAMES.index(kind)
            frame = np.zeros((size, size, 3), np.uint8)
            frame[:, : int(round(size * gt[t]))] = 255
            ds.add_frame({camera: frame, "progress": np.array([gt[t]], np.float32),
                          "segment": np.array([seg]),
                          "kind": np.array([kind_codes.index(kind)]), "task": "push the T onto the target"})
        ds.save_episode()
    ds.finalize()
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds") / "evaltest")


def test_load_episodes(dataset):
    eps = E.load_lerobot_episodes(dataset, progress=False)
    assert [e.kind for e in eps] == ["expert", "hesitation", "retry", "expert"]
    e = eps[1]
    assert e.frames.shape == (T, 32, 32, 3) and e.frames.dtype == np.uint8
    assert e.task == "push the T onto the target"
    assert e.hesitation_segments == [(8, 13)] and eps[2].retry_segments == [(8, 13)]
    np.testing.assert_allclose(e.gt, _gt("hesitation"), atol=1e-6)
    np.testing.assert_allclose(e.timestamps, np.arange(T) / FPS, atol=1e-6)
    # the bar width drawn from gt survives video coding
    width = (e.frames[-1, 16, :, 0] > 127).sum()
    assert abs(width - 32) <= 1
    assert len(E.load_lerobot_episodes(dataset, max_episodes=2, progress=False)) == 2


def test_load_errors(dataset, tmp_path):
    with pytest.raises(E.DatasetError, match="not a LeRobot dataset"):
        E.load_lerobot_episodes(tmp_path / "missing", progress=False)
    with pytest.raises(E.DatasetError, match="camera key 'observation.images.top' not found"):
        E.load_lerobot_episodes(dataset, camera_key="observation.images.top", progress=False)
    with pytest.raises(E.DatasetError, match="no ground-truth column 'gt'"):
        E.load_lerobot_episodes(dataset, gt_key="gt", progress=False)


def test_label_helpers():
    assert E.label_runs(["progress", "hesitation", "hesitation", "progress", "hesitation"], "hesitation") == [(1, 2), (4, 4)]
    assert E._episode_kind(["progress", "retry"], None) == "retry"
    assert E._episode_kind(["progress", "retry", "hesitation"], None) == "mixed"
    assert E._episode_kind(["progress", "stuck"], None) == "stuck"
    assert E._episode_kind(["progress"], "success") == "expert"


def _tiny_wvm(tmp_path, name="wvm"):
    model_mod = pytest.importorskip("wvm_ros.core.model")
    pytest.importorskip("wvm_ros.core.streaming")
    model = model_mod.build_model("tiny", seed=0)
    path = tmp_path / name
    model_mod.save_checkpoint(model, path)
    return path


def test_cli_end_to_end(dataset, tmp_path, capsys):
    from wvm_ros.cli.main import main

    ck = _tiny_wvm(tmp_path)
    nv = _tiny_wvm(tmp_path, "novideo")
    # train a tiny single-frame baseline through the CLI, then evaluate everything in one run
    rc = main(["eval", "--train-baseline", "--train-dataset", str(dataset), "--baseline-checkpoint",
               str(tmp_path / "sf"), "--baseline-steps", "5", "--baseline-channels", "4", "8",
               "--baseline-hidden", "8", "--checkpoint", str(ck), "--no-video-checkpoint", str(nv),
               "--dataset", str(dataset), "--output", str(tmp_path / "out"), "--no-progress",
               "--plots-per-kind", "1"])
    assert rc == 0, capsys.readouterr().err
    js = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for k in ("expert_voc", "retry_voc", "hesitation_rmse"):
        assert k in js and (js[k] is None or -1 <= js[k] <= 1 + 1e-9)
    assert set(js["baselines"]) == {"wvm_offline", "wvm_no_video", "single_frame", "blind_clock"}
    assert js["baselines"]["blind_clock"]["expert_voc"] == pytest.approx(1.0)
    assert js["baselines"]["blind_clock"]["retry_voc"] == pytest.approx(-1.0)
    assert js["model"]["info"]["checkpoint"] == str(ck)
    # warm-up frames of the streaming estimator are not scored, all others are
    assert 0 < js["model"]["frames_scored"] < js["model"]["frames_total"] == 4 * T
    assert js["baselines"]["single_frame"]["frames_scored"] == 4 * T
    md = (tmp_path / "out" / "metrics.md").read_text()
    assert "WVM without video loss" in md and "single-frame regressor" in md
    assert len(list((tmp_path / "out" / "plots").glob("episode_*.png"))) == 3
    assert "Hesitation-RMSE" in capsys.readouterr().out


def test_cli_errors(dataset, tmp_path, capsys):
    from wvm_ros.cli.main import main

    assert main(["eval", "--checkpoint", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "--output", str(tmp_path / "o")]) == 2
    assert "--checkpoint PATH is required" in capsys.readouterr().err
    ck = _tiny_wvm(tmp_path)
    assert main(["eval", "--checkpoint", str(ck), "--output", str(tmp_path / "o"),
                 "--dataset", str(tmp_path / "nodata"), "--no-progress"]) == 2
    assert "not a LeRobot dataset" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(ck), "--output", str(tmp_path / "o"), "--dataset", str(dataset),
                 "--baseline-checkpoint", str(tmp_path / "nosf"), "--no-progress"]) == 2
    assert "single-frame baseline checkpoint" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_workers_give_the_same_scores_as_one_process(dataset, tmp_path):
    """Episodes shared out over forked workers: every method's predictions (the offline ones
    taken from the live pass included) equal the one-process run's, in episode order. The parent
    runs a 2-thread OpenMP region first: the workers must not hang on its thread pool."""
    import torch

    from wvm_ros.core.model import load_value_model

    model = load_value_model(str(_tiny_wvm(tmp_path)))
    eps = E.load_lerobot_episodes(dataset, progress=False)

    def methods():
        shared = {}
        return [E.streaming_method(model, keep_offline=shared), E.offline_method(model, from_live=shared),
                E.clock_method()]

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.nn.functional.adaptive_avg_pool2d(torch.rand(8, 64, 96, 96), (12, 12))
        model.encode_frames(eps[0].frames[:8])
        torch.set_num_threads(1)  # as the workers run: the same sums in the same order
        one = E.evaluate(eps, methods(), progress=False, workers=1)
        torch.set_num_threads(2)
        two = E.evaluate(eps, methods(), progress=False, workers=2)
    finally:
        torch.set_num_threads(before)

    for name in ("wvm", "wvm_offline", "blind_clock"):
        assert set(two.results[name].predictions) == {e.episode_index for e in eps}
        for e in eps:
            np.testing.assert_array_equal(two.results[name].predictions[e.episode_index],
                                          one.results[name].predictions[e.episode_index])
        assert [s.episode_index for s in two.results[name].scores] == [e.episode_index for e in eps]
    assert {k: v for k, v in two.to_json().items() if k not in ("model", "baselines")} == \
        {k: v for k, v in one.to_json().items() if k not in ("model", "baselines")}
    # offline estimates differ from the live ones (later windows are averaged in): the shared pass is used
    assert not all(np.array_equal(one.results["wvm"].predictions[e.episode_index],
                                  one.results["wvm_offline"].predictions[e.episode_index], equal_nan=True) for e in eps)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        E.evaluate(eps, methods(), progress=False, workers=0)


@pytest.mark.timeout(120)
def test_worker_errors_reach_the_caller(dataset):
    eps = E.load_lerobot_episodes(dataset, progress=False)

    def bad(ep):
        if ep.episode_index == eps[-1].episode_index:
            raise RuntimeError("broken on the last episode")
        return np.zeros(ep.num_frames)

    with pytest.raises(RuntimeError, match="broken on the last episode"):
        E.evaluate(eps, [E.Method("bad", bad)], progress=False, workers=2)
    short = E.Method("short", lambda ep: np.zeros(ep.num_frames - 1))
    with pytest.raises(RuntimeError, match="method short: episode"):
        E.evaluate(eps, [short], progress=False, workers=2)
    assert E._SHARED is None  # a failed run leaves nothing behind for the next one


@pytest.mark.timeout(300)
def test_cli_workers_option(dataset, tmp_path, capsys):
    from wvm_ros.cli.eval import eval_workers
    from wvm_ros.cli.main import main

    assert eval_workers(3, "cpu") == 3
    assert eval_workers(0, "cpu") >= 1
    assert eval_workers(0, "cuda") == 1 and eval_workers(1, "cuda:0") == 1
    assert eval_workers(0, "cpu", threads=4) == 1 and eval_workers(1, "cpu", threads=4) == 1
    with pytest.raises(ValueError, match="use --threads 1"):
        eval_workers(2, "cpu", threads=4)
    ck = _tiny_wvm(tmp_path)
    common = ["eval", "--checkpoint", str(ck), "--dataset", str(dataset), "--no-progress", "--no-baselines"]
    assert main([*common, "--output", str(tmp_path / "o"), "--workers", "-1"]) == 2
    assert "--workers must be >= 0" in capsys.readouterr().err
    assert main([*common, "--output", str(tmp_path / "o"), "--workers", "2", "--device", "cuda"]) == 2
    assert "needs --device cpu" in capsys.readouterr().err
    assert main([*common, "--output", str(tmp_path / "w1"), "--workers", "1", "--plots-per-kind", "0"]) == 0
    assert main([*common, "--output", str(tmp_path / "w2"), "--workers", "2", "--plots-per-kind", "0"]) == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("w1", "w2"))
    assert a["episodes"] == b["episodes"]
    assert {k: a[k] for k in ("expert_voc", "retry_voc", "hesitation_rmse")} == \
        {k: b[k] for k in ("expert_voc", "retry_voc", "hesitation_rmse")}


def test_cli_batch_size_option(dataset, tmp_path, capsys):
    """--batch-size 1 (one by one) and the default (batched) give the same scores to float
    rounding; a batch size below 1 is refused, naming the flag."""
    from wvm_ros.cli.main import main

    ck = _tiny_wvm(tmp_path)
    common = ["eval", "--checkpoint", str(ck), "--dataset", str(dataset), "--no-progress", "--no-baselines",
              "--workers", "1", "--plots-per-kind", "0"]
    assert main([*common, "--output", str(tmp_path / "o"), "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err
    assert main([*common, "--output", str(tmp_path / "b1"), "--batch-size", "1"]) == 0
    assert main([*common, "--output", str(tmp_path / "bd")]) == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("b1", "bd"))
    assert a["dataset"]["num_episodes"] == b["dataset"]["num_episodes"] > 1
    for k in ("expert_voc", "retry_voc", "hesitation_rmse"):
        assert a[k] == pytest.approx(b[k], abs=1e-4), k
