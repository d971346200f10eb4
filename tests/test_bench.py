"""Benchmarks: tiny smoke runs (the real measurements are `wvm bench ...`, not tests)."""
from __future__ import annotations

import json
import time

import pytest

from conftest import requires_ros  # noqa: E402


def test_percentiles():
    from wvm_ros.bench import percentiles

    p = percentiles([0.001 * i for i in range(1, 101)])
    assert p["n"] == 100 and abs(p["p50_ms"] - 50.5) < 1e-9 and abs(p["p99_ms"] - 99.01) < 1e-6
    assert percentiles([])["n"] == 0


def test_realtime_loop_drops_frames_when_too_slow():
    """Latest-frame semantics: an estimator slower than the frame period processes only part
    of the frames, and its latency includes the wait; a fast one keeps up."""
    from wvm_ros.bench.node import realtime_loop

    class Est:
        def __init__(self, cost):
            self.cost = cost

        def push(self, f, stamp):
            time.sleep(self.cost)
            return object()

    slow = realtime_loop(Est(0.1), [None], rate=30.0, duration=1.0)
    fast = realtime_loop(Est(0.001), [None], rate=30.0, duration=1.0)
    assert slow["fraction_processed"] < 0.5 and slow["dropped"] > 10
    assert slow["latency_all_frames"]["p50_ms"] >= 95
    assert fast["fraction_processed"] > 0.9 and fast["latency_all_frames"]["p50_ms"] < 50


def test_bench_model_smoke(tmp_path):
    from wvm_ros.cli.main import main

    rc = main(["bench", "model", "--duration", "0.3", "--backends", "onnxruntime,tensorrt",
               "--frame-size", "96x96", "--output", str(tmp_path), "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    res = json.loads((tmp_path / "bench_model.json").read_text())
    assert res["baseline"] == "naive_torch_eager" and res["ratio"] > 0
    assert {"naive_torch_eager", "streaming_torch_model", "streaming_onnxruntime"} <= set(res["results"])
    assert "tensorrt" in res["skipped"]  # no GPU here: reported, not silently dropped
    for r in res["results"].values():
        assert r["per_estimate"]["n"] > 0 and r["per_estimate"]["p99_ms"] >= r["per_estimate"]["p50_ms"] > 0
    # the naive baseline re-encodes the whole window: never cheaper than streaming
    assert res["results"]["naive_torch_eager"]["per_estimate"]["p50_ms"] > \
        res["results"]["streaming_torch_model"]["per_estimate"]["p50_ms"]


def test_bench_chunk_smoke(tmp_path, capsys):
    """`wvm bench chunk` on the CPU (the paper-preset run is a GPU measurement: docs/performance.md)."""
    import torch

    from wvm_ros.cli.main import main

    rc = main(["bench", "chunk", "--preset", "tiny", "--device", "cpu", "--precision", "bf16", "--iters", "3",
               "--warmup", "1", "--output", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "bench_chunk.json").read_text())
    assert res["baseline"] == "chunk_eager_fp32" and res["ratio"] > 0 and res["outputs_finite"]
    assert set(res["results"]) == {"chunk_eager_fp32", "chunk_bf16", "joint_bf16"}
    assert res["video_tokens"] == 5 * 4 and res["parameters"] > 1e6
    for r in res["results"].values():
        assert r["latency"]["n"] == 3 and r["latency"]["p99_ms"] >= r["latency"]["p50_ms"] > 0
    assert res["meets_target"] == (res["results"]["chunk_bf16"]["latency"]["p99_ms"] <= 100.0)
    capsys.readouterr()
    assert main(["bench", "chunk", "--preset", "tiny", "--device", "cpu", "--precision", "fp16",
                 "--output", str(tmp_path)]) == 2
    assert "fp16 on the CPU is not supported" in capsys.readouterr().err
    assert main(["bench", "chunk", "--preset", "huge", "--device", "cpu", "--output", str(tmp_path)]) == 2
    assert "huge" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "chunk", "--preset", "tiny", "--device", "cuda", "--output", str(tmp_path)]) == 2
        assert "sees no CUDA device" in capsys.readouterr().err
    # a preset that does not fit is refused before anything is allocated
    import psutil

    if psutil.virtual_memory().available < 25 * 2**30:
        assert main(["bench", "chunk", "--preset", "paper", "--device", "cpu", "--output", str(tmp_path)]) == 2
        assert "needs about" in capsys.readouterr().err


def test_bench_rejects_bad_input(tmp_path, capsys):
    from wvm_ros.cli.main import main

    assert main(["bench", "model", "--frame-size", "big", "--output", str(tmp_path)]) == 2
    assert "HxW" in capsys.readouterr().err


@requires_ros
@pytest.mark.timeout(300)
def test_bench_node_smoke(tmp_path, ros_env):
    from wvm_ros.cli.main import main

    rc = main(["bench", "node", "--duration", "3", "--no-baseline", "--frame-size", "96x96",
               "--output", str(tmp_path), "--startup-timeout", "180"])
    assert rc == 0
    res = json.loads((tmp_path / "bench_node.json").read_text())
    node = res["node"]
    assert node["progress_msgs"] > 0 and node["latency_new_estimates"]["n"] >= 1
    assert node["latency_new_estimates"]["p50_ms"] > 0


def test_bench_train_smoke(tmp_path):
    """`wvm bench train` on a 2-layer tiny model: both ways give the same loss and gradients,
    both are timed, and the ratio is baseline / new (the measurement: docs/performance.md)."""
    from wvm_ros.cli.main import main

    common = ["--model-set", "num_layers=2", "--model-set", "image_size=[64,64]", "--model-set", "elapsed_input=true",
              "--batch-size", "3", "--steps", "2", "--rounds", "2", "--warmup", "1", "--threads", "1"]
    assert main(["bench", "train", *common, "--output", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "bench_train.json").read_text())
    assert res["same_loss_and_gradients"] and res["grad_max_abs"] > 0 and res["grad_max_abs_diff"] <= 1e-4 * res["grad_max_abs"]
    assert res["baseline"] == "future_frames_in_graph" and res["image_size"] == [64, 64] and res["elapsed_input"]
    assert set(res["results"]) == {"future_frames_in_graph", "future_frames_no_grad"}
    steps = {k: r["step"] for k, r in res["results"].items()}
    assert all(s["n"] == 4 and s["p50_ms"] > 0 for s in steps.values())
    assert res["ratio"] == pytest.approx(steps["future_frames_in_graph"]["p50_ms"] / steps["future_frames_no_grad"]["p50_ms"])
    # bad input: named
    assert main(["bench", "train", "--model-set", "num_layers", "--output", str(tmp_path)]) == 2
    assert main(["bench", "train", "--lambda-video", "0", "--output", str(tmp_path)]) == 2
    assert main(["bench", "train", "--preset", "paper", "--output", str(tmp_path)]) == 2
