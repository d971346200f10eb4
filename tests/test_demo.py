"""`wvm demo` failure paths and helpers (the happy path runs in tests/test_e2e.py)."""
import json
import subprocess
import sys

import pytest

from conftest import requires_ros
from wvm_ros.cli.demo import Attempt, _parse_sets, find_bags, plot_attempts, split_bags


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


@requires_ros
def test_monitor_follows_attempts_even_without_their_start():
    from types import SimpleNamespace as NS

    from wvm_msgs.msg import EpisodeEvent

    from wvm_ros.cli.demo import DemoMonitor

    m = DemoMonitor()
    ev = lambda kind, att, outcome="": NS(kind=kind, episode_id="ep", attempt=att, reason="r", outcome=outcome)  # noqa: E731
    m.on_message("/wvm/episode_event", ev(EpisodeEvent.START, 1))
    m.on_message("/wvm/progress", NS(valid=True, untrained=True, episode_id="ep", attempt=1, progress=0.3))
    m.on_message("/sim/ground_truth_progress", NS(data=0.4))
    m.on_message("/wvm/episode_event", ev(EpisodeEvent.STALL, 1))
    m.on_message("/wvm/episode_event", ev(EpisodeEvent.END, 1, "failure"))
    m.on_message("/wvm/episode_event", ev(EpisodeEvent.RETRY, 1))
    # START of attempt 2 lost
    m.on_message("/wvm/episode_event", ev(EpisodeEvent.SUCCESS, 2))
    m.on_message("/wvm/episode_event", ev(EpisodeEvent.END, 2, "success"))
    assert m.finished == 2
    a1, a2 = m.attempts
    assert (a1.outcome, a1.decided_by, a1.final_pred, a1.final_gt) == ("failure", "STALL: r", 0.3, 0.4)
    assert a1.pred == [(a1.pred[0][0], 0.3)] and a1.untrained
    assert (a2.attempt, a2.outcome, a2.decided_by) == (2, "success", "SUCCESS: r")


def _bag_meta(folder, episode, attempt, start_ns):
    folder.mkdir(parents=True)
    (folder / "metadata.yaml").write_text(
        "rosbag2_bagfile_information:\n  version: 9\n  storage_identifier: mcap\n"
        f"  starting_time:\n    nanoseconds_since_epoch: {start_ns}\n  message_count: 5\n"
        f"  custom_data:\n    episode_id: {episode}\n    attempt: '{attempt}'\n    outcome: success\n")


def test_bags_of_earlier_runs_are_kept_apart(tmp_path):
    """Running the demo again into the same folder: the earlier run's bags are listed as earlier,
    not as attempts cut short by this run's stop."""
    t0 = 1_795_000_000_000_000_000
    _bag_meta(tmp_path / "old_att001", "ep0001-old", 1, t0 - 10**12)
    _bag_meta(tmp_path / "new_att001", "ep0001-new", 1, t0 + 10**9)
    _bag_meta(tmp_path / "new2_att001", "ep0002-new", 1, t0 + 2 * 10**9)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed")
    all_bags = find_bags(tmp_path)
    assert len(all_bags) == 4
    bags, extra, earlier = split_bags(all_bags, {("ep0001-new", "1")}, t0)
    assert [b["episode_id"] for b in bags if "error" not in b] == ["ep0001-new"]
    assert any("error" in b for b in bags)                      # unreadable: reported with this run
    assert extra == [str(tmp_path / "new2_att001")]
    assert earlier == [str(tmp_path / "old_att001")]
