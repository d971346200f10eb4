"""Shared fixtures.

Tests that start DDS use `ros_env` (localhost discovery, a random ROS_DOMAIN_ID of their
own) and start processes through `procs`, which stops every one of them at teardown.
In-process rclpy tests use `rclpy_context`.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from wvm_ros.proc import ProcessGroup, ros_test_env

HAVE_RCLPY = importlib.util.find_spec("rclpy") is not None
HAVE_MSGS = importlib.util.find_spec("wvm_msgs") is not None
requires_ros = pytest.mark.skipif(
    not (HAVE_RCLPY and HAVE_MSGS),
    reason="needs rclpy and the built wvm_msgs (run scripts/setup.sh, then source scripts/env.sh)",
)


@pytest.fixture
def ros_env(monkeypatch):
    """A DDS environment for this test only; also applied to this process (for in-process rclpy)."""
    env = ros_test_env()
    for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "RMW_IMPLEMENTATION"):
        monkeypatch.setenv(k, env[k])
    return env


@pytest.fixture
def procs(tmp_path):
    group = ProcessGroup(log_dir=tmp_path / "proc_logs")
    yield group
    group.stop_all()


@pytest.fixture
def rclpy_context(ros_env):
    """An initialised rclpy context, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    try:
        rclpy.shutdown(context=ctx)
    except Exception:
        pass


def stop_child(child) -> None:
    """Kill a test's helper subprocess if it still runs, reap it and close its pipes."""
    if child.poll() is None:
        child.kill()
    child.wait(timeout=10)
    for stream in (child.stdin, child.stdout, child.stderr):
        if stream is not None:
            stream.close()


def python_exe() -> str:
    return sys.executable


def node_cmd(module: str, *ros_args: str) -> list[str]:
    """argv that runs a node module as its own process (same as its console script)."""
    cmd = [sys.executable, "-m", module]
    if ros_args:
        cmd += ["--ros-args", *ros_args]
    return cmd
