"""`colcon build` of the workspace ros2_ws/ (wvm_msgs + wvm_ros) with the project's environment,
into a temporary build/install base (the checkout's own ros2_ws/build is left alone)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("colcon") is None,
                                                   reason="colcon not installed (run scripts/setup.sh)")]


def test_colcon_builds_wvm_msgs_and_wvm_ros(tmp_path):
    env = dict(os.environ)
    venv = Path(sys.prefix)
    if not env.get("ROS_DISTRO"):  # ROS 2 from PyPI wheels: the venv is an ament prefix (as scripts/setup.sh)
        env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(venv), env.get("AMENT_PREFIX_PATH", "")) if p)
    cmd = ["colcon", "--log-base", str(tmp_path / "log"), "build", "--base-paths", "src",
           "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
           "--event-handlers", "console_cohesion-",
           "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"]
    proc = subprocess.run(cmd, cwd=ROOT / "ros2_ws", env=env, capture_output=True, text=True, timeout=900)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in (tmp_path / "log").rglob("stderr.log"))
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{logs}"
    inst = tmp_path / "install"
    # interfaces: generated Python message classes
    assert list((inst / "wvm_msgs").rglob("_progress.py")), "wvm_msgs Python bindings not generated"
    assert (inst / "wvm_msgs" / "share" / "wvm_msgs" / "msg" / "EpisodeEvent.msg").is_file()
    # wvm_ros: executables where `ros2 run` / launch_ros look, launch + config installed
    libexec = inst / "wvm_ros" / "lib" / "wvm_ros"
    for exe in ("sim_robot_node", "value_node", "policy_node", "data_logger_node", "camera_node", "wvm"):
        assert (libexec / exe).is_file(), f"{exe} missing under lib/wvm_ros"
    share = inst / "wvm_ros" / "share" / "wvm_ros"
    assert (share / "launch" / "bringup.launch.py").is_file() and (share / "config" / "wvm.yaml").is_file()
    assert (inst / "share" / "ament_index" / "resource_index" / "packages" / "wvm_ros").exists() or \
        (share.parent / "ament_index" / "resource_index" / "packages" / "wvm_ros").exists()
