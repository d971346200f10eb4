"""scripts/gpu/scaling.py (the data-and-compute scaling experiment of docs/evaluation.md) runs
end to end on a CPU with small numbers: parallel collection, the frame cache, a training, the tar."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from wvm_ros.core.model import load_value_model

ROOT = Path(__file__).resolve().parents[1]


def test_scaling_script_small_run_on_cpu(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_VIDEODRIVER": "dummy"}
    env.pop("WVM_DEVBUNDLE", None)
    r = subprocess.run([sys.executable, str(ROOT / "scripts/gpu/scaling.py"), "--attempts", "3", "--workers", "2",
                        "--run", "tiny:2:3:4", "--device", "cpu", "--threads", "1", "--parallel", "1",
                        "--output", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "collected 3 attempts" in r.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    (run,) = summary["runs"]
    assert (run["name"], run["attempts"], run["steps"], run["batch_size"]) == ("tiny", 2, 3, 4)
    assert sum(summary["kinds"].values()) == 3
    with tarfile.open(tmp_path / "out" / "tiny.tar") as tf:
        tf.extractall(tmp_path / "ck", filter="data")
    model = load_value_model(tmp_path / "ck" / "tiny", "tiny")
    assert model.checkpoint_id == run["checkpoint_id"] and model.config.elapsed_input
    # the bad-argument path names the flag and what it expects
    bad = subprocess.run([sys.executable, str(ROOT / "scripts/gpu/scaling.py"), "--attempts", "1", "--run", "x:1",
                          "--output", str(tmp_path / "o2")], capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and "NAME:ATTEMPTS:STEPS[:BATCH]" in bad.stderr
