"""`wvm demo` failure paths and helpers (the happy path runs in tests/test_e2e.py)."""
import json
import subprocess
import sys

import pytest

from conftest import requires_ros
from wvm_ros.cli.demo import Attempt, _parse_sets, plot_attempts


def test_plot_and_set_parsing(tmp_path):
    a = Attempt("ep1", 1, 0.0, pred=[(0.5, 0.1), (1.0, 0.4)], gt=[(0.0, 0.0), (1.0, 0.5)],
                events=[(1.0, "SUCCESS", "x"), (1.0, "END", "x")], outcome="success")
    b = Attempt("ep1", 2, 0.0)
    p = plot_attempts([a, b], tmp_path / "p.png", title="t")
    assert p.stat().st_size > 5000
    assert _parse_sets(["wvm_policy.timeout_s=15", "sim_robot.frame_id=cam"]) == {
        "wvm_policy": {"timeout_s": 15}, "sim_robot": {"frame_id": "cam"}}
    with pytest.raises(ValueError, match="NODE.PARAM=VALUE"):
        _parse_sets(["timeout_s=15"])


@requires_ros
@pytest.mark.ros
def test_demo_reports_a_dying_node_with_its_log_tail(ros_env, tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "wvm_ros.cli.main", "demo", "--output", str(out), "--attempts", "1",
           "--checkpoint", "/no/such/checkpoint", "--no-live", "--timeout", "120",
           "--domain-id", ros_env["ROS_DOMAIN_ID"]]
    proc = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, proc.stderr
    assert "node wvm_value died (exit code 2)" in proc.stderr
    assert "/no/such/checkpoint" in proc.stderr and "'tiny'" in proc.stderr  # the log tail
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is False and summary["exit_code"] == 1


def test_demo_rejects_unwritable_output(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        from wvm_ros.cli.main import main

        import os
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        assert main(["demo", "--output", str(ro / "x"), "--attempts", "1"]) == 2
    finally:
        ro.chmod(0o700)
