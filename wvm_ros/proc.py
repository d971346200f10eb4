"""Process groups: start node processes and stop every one of them, whatever happens.

Used by `wvm up` / `wvm demo` (the project's own runner) and by the tests. ROS-free.
Each child runs in its own session (process group), so that stopping it also stops
anything it started; stop() sends SIGINT (what Ctrl-C sends, so rclpy nodes shut down
cleanly), then SIGTERM, then SIGKILL, with a grace period between each.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Mapping, Sequence


@dataclass
class Child:
    name: str
    argv: list[str]
    popen: subprocess.Popen
    log_path: Path | None = None
    _log: IO | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def ros_test_env(domain_id: int | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for processes that talk DDS in tests / demos: localhost-only discovery
    and a domain of their own (random unless given) so that parallel runs never cross-talk."""
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else random.randint(1, 200))
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ProcessGroup:
    """A set of child processes that are stopped together (also usable as a context manager)."""

    def __init__(self, log_dir: str | os.PathLike | None = None):
        self.children: list[Child] = []
        self.log_dir = Path(log_dir) if log_dir else None
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: str | os.PathLike | None = None) -> Child:
        log = None
        log_path = None
        if self.log_dir:
            log_path = self.log_dir / f"{name}.log"
            log = open(log_path, "ab", buffering=0)
        popen = subprocess.Popen(
            list(argv), env=dict(env) if env is not None else None, cwd=cwd,
            stdout=log if log else None, stderr=subprocess.STDOUT if log else None,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        child = Child(name, list(argv), popen, log_path, log)
        self.children.append(child)
        return child

    def stop(self, child: Child, grace_s: float = 5.0) -> int | None:
        """Stop one child and its process group: SIGINT, then SIGTERM, then SIGKILL."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if child.popen.poll() is not None:
                break
            try:
                os.killpg(child.popen.pid, sig)
            except ProcessLookupError:
                break
            try:
                child.popen.wait(timeout=grace_s if sig != signal.SIGKILL else 10)
            except subprocess.TimeoutExpired:
                continue
        # the group may hold grandchildren that outlived the leader
        try:
            os.killpg(child.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if child._log:
            child._log.close()
            child._log = None
        return child.popen.poll()

    def kill(self, child: Child) -> None:
        """SIGKILL a child's whole group at once (fault-injection tests)."""
        try:
            os.killpg(child.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.popen.wait(timeout=10)

    def stop_all(self, grace_s: float = 5.0) -> dict[str, int | None]:
        codes = {}
        # signal everyone first so they shut down in parallel, then reap
        for c in self.children:
            if c.alive():
                try:
                    os.killpg(c.popen.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace_s
        for c in self.children:
            try:
                c.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for c in self.children:
            codes[c.name] = self.stop(c, grace_s=2.0)
        return codes

    def dead(self) -> list[Child]:
        return [c for c in self.children if not c.alive()]

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
