"""`wvm up` / GraphRunner: real node processes with the graph's command lines; a node that
dies is reported with its log tail; Ctrl-C (SIGINT) stops every node."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import requires_ros
from wvm_ros.graph import NodeSpec, build_graph
from wvm_ros.runner import GraphRunner

pytestmark = [requires_ros, pytest.mark.ros]


def test_runner_reports_a_dying_node(ros_env, tmp_path):
    spec = NodeSpec(name="wvm_value", executable="value_node", module="wvm_ros.nodes.value_node",
                    parameters={"checkpoint": "/no/such/dir"})
    lines = []
    runner = GraphRunner([spec], log_dir=tmp_path, env=ros_env, echo=lines.append)
    with runner:
        runner.start()
        rc = runner.wait(timeout_s=60)
    assert rc == 1
    text = "\n".join(lines)
    assert "node wvm_value died (exit code 2)" in text and "/no/such/dir" in text


def test_wvm_up_starts_the_graph_and_ctrl_c_stops_it(ros_env, tmp_path):
    """`wvm up --record false` with the sim: sim_robot + value + policy run; SIGINT stops all."""
    from sensor_msgs.msg import Image
    from wvm_msgs.msg import Progress

    from wvm_ros.ros.testing import TopicProbe

    cmd = [sys.executable, "-m", "wvm_ros.cli.main", "up", "--record", "false", "--log-dir", str(tmp_path / "logs")]
    up = subprocess.Popen(cmd, env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
    try:
        with TopicProbe({"/camera/image_raw": Image, "/wvm/progress": Progress}) as probe:
            probe.wait_for(lambda: probe.get("/camera/image_raw") and probe.get("/wvm/progress"), timeout=150,
                           what="images from sim_robot and Progress from the value node",
                           alive=lambda: up.poll() is None or pytest.fail(up.stdout.read()))
        os.killpg(up.pid, signal.SIGINT)
        out, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    assert up.returncode == 0, out
    assert "SIGINT: stopping all nodes" in out
    pids = [int(l.split(" pid ")[1].split()[0]) for l in out.splitlines() if " pid " in l]
    assert len(pids) == 3
    time.sleep(0.5)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_print_shows_the_command_lines(capsys):
    from wvm_ros.cli.main import main

    assert main(["up", "--print", "--task", "push it", "--mode", "camera"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [l.split()[0] for l in out] == ["camera_node", "value_node", "policy_node", "data_logger_node"]
    assert "task:=\"push it\"" in out[1] or "'task:=\"push it\"'" in out[1]
