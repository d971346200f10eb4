"""End to end: the whole graph (sim robot, value node, policy node, data logger) as separate
processes over real DDS, driven by `wvm demo` for one short attempt; the attempt's bag is
read back with `rosbags`."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import requires_ros

pytestmark = [requires_ros, pytest.mark.ros, pytest.mark.slow]


def _stamp(msg) -> float:
    return msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec


def test_graph_runs_one_attempt_and_the_bag_reads_back(ros_env, tmp_path):
    from rosbags.highlevel import AnyReader

    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "wvm_ros.cli.main", "demo", "--output", str(out), "--attempts", "1",
           "--max-attempts", "1", "--attempt-timeout", "6", "--size", "64", "--no-live", "--timeout", "240",
           "--domain-id", ros_env["ROS_DOMAIN_ID"]]
    proc = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=300)
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and len(summary["attempts"]) == 1, report
    att = summary["attempts"][0]
    assert att["outcome"] in ("success", "failure", "abort")
    assert (out / "progress.png").stat().st_size > 5000
    assert summary["overlay"] and (out / "overlay.png").stat().st_size > 1000
    assert "bags (1)" in proc.stdout and "plot:" in proc.stdout
    value_diag = next(v for k, v in summary["diagnostics"].items() if k.startswith("wvm_value"))
    assert value_diag["rejected frames"] == "0" and float(value_diag["estimate rate (Hz)"]) > 0

    bags = [Path(b["path"]) for b in summary["bags"]]
    assert len(bags) == 1, summary["bags"]
    with AnyReader(bags) as reader:
        counts = {c.topic: 0 for c in reader.connections}
        msgs: dict[str, list] = {}
        for conn, _t, raw in reader.messages():
            counts[conn.topic] += 1
            if conn.topic in ("/wvm/progress", "/wvm/episode_event", "/camera/image_raw"):
                msgs.setdefault(conn.topic, []).append(reader.deserialize(raw, conn.msgtype))
    for topic in ("/wvm/progress", "/camera/image_raw", "/wvm/episode_event", "/robot/action"):
        assert counts.get(topic, 0) > 0, f"{topic} missing from the bag: {counts}"

    progress = msgs["/wvm/progress"]
    valid = [m for m in progress if m.valid]
    assert valid, "no valid Progress in the bag"
    assert all(0.0 <= m.progress <= 1.0 and not math.isnan(m.progress) for m in valid)
    # estimates of frames taken after START carry the attempt's ids (a frame from just before
    # START may still be valued, tagged with what the value node knew then)
    start = _stamp(msgs["/wvm/episode_event"][0])
    mine = [m for m in valid if _stamp(m) >= start]
    assert mine and all((m.episode_id, m.attempt) == (att["episode_id"], att["attempt"]) for m in mine)
    for topic in ("/wvm/progress", "/camera/image_raw"):
        st = [_stamp(m) for m in msgs[topic]]
        assert all(b >= a for a, b in zip(st, st[1:])), f"{topic} stamps decrease"
    images = msgs["/camera/image_raw"]
    assert images[0].encoding == "rgb8" and (images[0].width, images[0].height) == (64, 64)
    # every Progress stamp is the stamp of an image of the attempt
    image_stamps = {_stamp(m) for m in images}
    assert sum(_stamp(m) in image_stamps for m in valid) >= len(valid) * 0.8

    events = msgs["/wvm/episode_event"]
    kinds = [e.kind for e in events]
    from wvm_msgs.msg import EpisodeEvent
    assert kinds[0] == EpisodeEvent.START and kinds[-1] == EpisodeEvent.END, kinds
    assert events[-1].outcome == att["outcome"]
    assert {(e.episode_id, e.attempt) for e in events} == {(att["episode_id"], att["attempt"])}
    import yaml
    custom = yaml.safe_load((bags[0] / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["custom_data"]
    assert custom["outcome"] == att["outcome"] and custom["episode_id"] == att["episode_id"]
