"""The shipped checkpoint models/wvm-tiny-pusht loads offline and estimates progress."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wvm_ros.core.model import file_hash, load_value_model

CKPT = Path(__file__).resolve().parents[1] / "models" / "wvm-tiny-pusht"


@pytest.mark.skipif(not (CKPT / "model.safetensors").is_file(), reason="shipped checkpoint not present")
def test_shipped_checkpoint_loads_and_estimates():
    from wvm_ros.core.streaming import StreamingValueEstimator

    size = sum(f.stat().st_size for f in CKPT.iterdir())
    assert size < 50e6
    model = load_value_model(CKPT, "tiny")
    assert not model.untrained and model.checkpoint_id == file_hash(CKPT / "model.safetensors")
    card = (CKPT / "README.md").read_text()
    assert model.checkpoint_id in card
    metrics = json.loads((CKPT / "eval_metrics.json").read_text())["model"]
    assert f"{metrics['retry_voc']:.3f}" in card and f"{metrics['hesitation_rmse']:.3f}" in card
    est = StreamingValueEstimator(model, "Push the T-shaped block onto the T-shaped target.")
    rng = np.random.default_rng(0)
    outs = [est.push(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), i * 0.5) for i in range(6)]
    assert outs[0] is None and all(0.0 <= o.progress <= 1.0 for o in outs[1:])
