"""Policy-extraction weights: hand-computed cases, the sidecar, lerobot's SampleWeighter hook."""
from __future__ import annotations

import math

import numpy as np
import pytest

from wvm_ros.core import weights as W

# two episodes, H = 3 (worked by hand in the comments)
VALUES = [0.0, 0.1, 0.3, 0.2, 0.5,  0.0, 0.4, 0.2]
EPISODE = [0, 0, 0, 0, 0, 1, 1, 1]
# ep0 (T=5): t0 tail2 0.3-0 | t1 tail3 0.2-0.1 | t2 tail4 0.5-0.3 | t3 tail4 0.5-0.2 | t4 tail4 0
# ep1 (T=3): t0 tail2 0.2-0 | t1 tail2 0.2-0.4 | t2 tail2 0
DELTA = [0.3, 0.1, 0.2, 0.3, 0.0, 0.2, -0.2, 0.0]
TAIL = [2, 3, 4, 4, 4, 7, 7, 7]


def test_chunk_advantage_hand_computed():
    d, tail = W.chunk_advantages(VALUES, EPISODE, 3)
    np.testing.assert_allclose(d, DELTA, atol=1e-12)
    assert tail.tolist() == TAIL
    # H = 1: every chunk is one frame, delta 0
    d1, _ = W.chunk_advantages(VALUES, EPISODE, 1)
    assert np.all(d1 == 0)


def test_filtered_binary():
    assert W.filtered_binary(DELTA).tolist() == [1, 1, 1, 1, 1, 1, 0, 1]


def test_filtered_percentile_keeps_top_70_percent():
    # round(0.7 * 8) = 6 kept: 0.3 (i0), 0.3 (i3), 0.2 (i2), 0.2 (i5), 0.1 (i1), 0.0 (i4 before i7)
    assert W.filtered_percentile(DELTA, 0.7).tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert W.filtered_percentile(DELTA, 1.0).tolist() == [1] * 8
    with pytest.raises(W.WeightsError, match="keep"):
        W.filtered_percentile(DELTA, 0.0)


def test_awr_clip_and_batch_mean():
    w = W.awr(DELTA, tau=10.0)
    # exp(3), exp(1), exp(2) clip to 2; exp(0) = 1; exp(-2) = 0.135335
    np.testing.assert_allclose(w, [2, 2, 2, 2, 1, 2, math.exp(-2), 1], rtol=1e-6)
    w2 = W.awr(DELTA, tau=2.0)
    np.testing.assert_allclose(w2, [math.exp(0.6), math.exp(0.2), math.exp(0.4), math.exp(0.6), 1,
                                    math.exp(0.4), math.exp(-0.4), 1], rtol=1e-6)
    b = W.normalise_batch_mean([1.0, math.exp(-2)])
    np.testing.assert_allclose(b, [2 / (1 + math.exp(-2)), 2 * math.exp(-2) / (1 + math.exp(-2))], rtol=1e-6)
    assert W.normalise_batch_mean([0.0, 0.0]).tolist() == [0.0, 0.0]
    with pytest.raises(W.WeightsError, match="tau"):
        W.awr(DELTA, tau=0)


def test_weighted_bc_loss():
    assert W.weighted_bc_loss([1, 2, 3], [1, 0, 1]) == pytest.approx(4 / (2 + 1e-6))
    assert W.weighted_bc_loss([1, 2], [0, 0]) == 0.0


def test_bad_inputs():
    with pytest.raises(W.WeightsError, match="horizon"):
        W.chunk_advantages(VALUES, EPISODE, 0)
    with pytest.raises(W.WeightsError, match="not finite"):
        W.chunk_advantages([0.0, float("nan")], [0, 0], 2)
    with pytest.raises(W.WeightsError, match="contiguous"):
        W.chunk_advantages([0, 0, 0], [0, 1, 0], 2)
    with pytest.raises(W.WeightsError, match="method"):
        W.compute_weights(np.zeros(2), "bc")
    with pytest.raises(W.WeightsError, match=r"horizon: expected an action-chunk length .*got nan"):
        W.chunk_advantages(VALUES, EPISODE, float("nan"))


@pytest.mark.parametrize("tau", [float("nan"), float("inf"), -1.0, "hot"])
def test_awr_rejects_a_non_finite_or_non_positive_tau(tau):
    with pytest.raises(W.WeightsError, match=r"tau: expected a temperature \(a finite number > 0\), got"):
        W.awr(DELTA, tau=tau)
    with pytest.raises(W.WeightsError, match="tau"):
        W.compute_weights(np.asarray(DELTA), "awr", tau=tau)


def test_weights_reject_non_finite_clip_keep_and_delta():
    with pytest.raises(W.WeightsError, match="clip: expected a maximum weight"):
        W.awr(DELTA, tau=2.0, clip=float("nan"))
    with pytest.raises(W.WeightsError, match=r"keep: expected a fraction in \(0, 1\], got nan"):
        W.filtered_percentile(DELTA, float("nan"))
    bad = [0.1, float("nan"), -float("inf")]
    for fn in (W.filtered_binary, W.filtered_percentile, W.awr):
        with pytest.raises(W.WeightsError, match="delta: expected finite chunk advantages, 2 of 3"):
            fn(bad)
    # AWR on large advantages overflows exp: clipped, never inf / NaN
    w = W.awr([1e3, -1e3], tau=10.0)
    assert w.tolist() == [2.0, 0.0]


def test_write_weights_checks_parameters_before_reading(tmp_path):
    """A bad tau is said as such (not as a missing dataset), and nothing is written."""
    with pytest.raises(W.WeightsError, match="tau"):
        W.write_weights(tmp_path / "missing", "awr", tau=float("nan"))
    with pytest.raises(W.WeightsError, match="keep"):
        W.write_weights(tmp_path / "missing", "filtered-percentile", keep=float("nan"))
    assert not (tmp_path / "missing").exists()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from wvm_ros.core.dataset import ValuedDatasetWriter

    root = tmp_path_factory.mktemp("w") / "ds"
    w = ValuedDatasetWriter(root, image_shapes={"observation.image": (4, 4, 3)}, state=2, action=2,
                            use_videos=False, default_task="t")
    img = np.zeros((4, 4, 3), np.uint8)
    for ep in (0, 1):
        vals = [v for v, e in zip(VALUES, EPISODE) if e == ep]
        for v in vals:
            w.add_frame({"observation.image": img}, [0, 0], [0, 0], progress=v)
        w.end_episode()
    w.finalize()
    return root


def test_sidecar_and_cli(dataset, capsys):
    from wvm_ros.cli.main import main

    s = W.write_weights(dataset, "filtered-binary", horizon=3)
    meta, df = W.read_weights(s.path)
    assert meta == {"method": "filtered-binary", "horizon": 3, "value_column": "progress"}
    assert df["index"].tolist() == list(range(8))
    assert df["weight"].tolist() == [1, 1, 1, 1, 1, 1, 0, 1]
    np.testing.assert_allclose(df["delta"], DELTA, atol=1e-6)
    assert df["t_tail"].tolist() == [2, 3, 4, 4, 4, 2, 2, 2]      # frame index within the episode
    assert main(["weights", str(dataset), "--method", "awr", "--tau", "2", "-H", "3"]) == 0
    meta, df = W.read_weights(dataset / W.SIDECAR)
    assert meta["method"] == "awr" and meta["tau"] == 2.0
    np.testing.assert_allclose(df["weight"], W.awr(DELTA, 2.0), rtol=1e-6)
    assert main(["weights", str(dataset), "--method", "awr", "--value-column", "nope"]) == 1
    assert "value column 'nope' not in dataset" in capsys.readouterr().err
    assert main(["weights", str(dataset.parent / "missing"), "--method", "awr"]) == 1


def test_lerobot_sample_weighting_hook(dataset):
    import torch
    from lerobot.utils.sample_weighting import SampleWeightingConfig

    W.write_weights(dataset, "awr", horizon=3, tau=10.0)
    W.install_lerobot_hook()
    import lerobot.utils.sample_weighting as sw

    weighter = sw.make_sample_weighter(SampleWeightingConfig(type="wvm"), policy=None,
                                       device=torch.device("cpu"), dataset_root=str(dataset))
    assert isinstance(weighter, sw.SampleWeighter)
    w, stats = weighter.compute_batch_weights({"index": torch.tensor([4, 6])})
    e = math.exp(-2)
    np.testing.assert_allclose(w.numpy(), [2 / (1 + e), 2 * e / (1 + e)], rtol=1e-5)
    assert w.mean().item() == pytest.approx(1.0)
    # other types still go to lerobot
    assert sw.make_sample_weighter(SampleWeightingConfig(type="uniform"), None, torch.device("cpu")) is not None
    with pytest.raises(W.WeightsError, match="outside the weights sidecar"):
        weighter.compute_batch_weights({"index": torch.tensor([100])})
