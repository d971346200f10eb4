"""Start the graph of `wvm_ros.graph` as plain processes (where `ros2 launch` is absent).

    runner = GraphRunner(build_graph(...), log_dir="runs/x/logs", env=os.environ)
    runner.start()
    runner.wait()          # until Ctrl-C (SIGINT / SIGTERM) or a node dies
    runner.stop()

Each node is started as `python -m <module> --ros-args -r __node:=<name> --params-file <f>
-p k:=v -r from:=to` (`NodeSpec.argv`), the same process a launch_ros `Node` action
starts, in its own process group (`wvm_ros.proc`). ROS-free.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from wvm_ros.graph import NodeSpec
from wvm_ros.proc import Child, ProcessGroup


class NodeDied(RuntimeError):
    def __init__(self, child: Child):
        self.child = child
        code = child.popen.returncode
        super().__init__(f"node {child.name} exited with code {code}")


class GraphRunner:
    def __init__(self, specs: Sequence[NodeSpec], log_dir: str | os.PathLike | None = None,
                 env: Mapping[str, str] | None = None, python: str | None = None,
                 echo: Callable[[str], None] | None = None):
        if not specs:
            raise ValueError("no nodes to start")
        self.specs = list(specs)
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.python = python or sys.executable
        self.group = ProcessGroup(log_dir=log_dir)
        self.echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
        self._stopping = False

    @property
    def children(self) -> list[Child]:
        return self.group.children

    def start(self, only: Sequence[str] | None = None) -> None:
        """Start the nodes (those named in `only`, in graph order) that are not running yet."""
        started = {c.name for c in self.group.children}
        unknown = set(only or ()) - {s.name for s in self.specs}
        if unknown:
            raise ValueError(f"no such nodes in the graph: {sorted(unknown)}")
        for spec in self.specs:
            if spec.name in started or (only is not None and spec.name not in only):
                continue
            argv = spec.argv(self.python)
            child = self.group.start(spec.name, argv, env=self.env)
            where = f" (log {child.log_path})" if child.log_path else ""
            self.echo(f"[wvm up] started {spec.name} pid {child.pid}{where}")

    def check(self) -> None:
        """Raise NodeDied for the first node that is no longer running."""
        for c in self.group.children:
            if not c.alive():
                raise NodeDied(c)

    def wait(self, timeout_s: float | None = None, poll_s: float = 0.2,
             until: Callable[[], bool] | None = None) -> int:
        """Block until SIGINT/SIGTERM (returns 0), `until()` is true (0), a node dies (1,
        its log tail printed) or `timeout_s` passes (0)."""
        stop = {"sig": None}

        def _handler(signum, _frame):
            stop["sig"] = signum

        old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            t0 = time.monotonic()
            while stop["sig"] is None:
                try:
                    self.check()
                except NodeDied as e:
                    self.report_death(e.child)
                    return 1
                if until is not None and until():
                    return 0
                if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                    return 0
                time.sleep(poll_s)
            self.echo(f"[wvm up] {signal.Signals(stop['sig']).name}: stopping all nodes")
            return 0
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def report_death(self, child: Child, lines: int = 30) -> None:
        self.echo(f"[wvm up] node {child.name} died (exit code {child.popen.returncode}); "
                  f"last lines of its log{f' {child.log_path}' if child.log_path else ''}:")
        tail = child.log_tail(lines)
        self.echo("\n".join("    " + ln for ln in tail.splitlines()) or "    (no output)")

    def stop(self, grace_s: float = 5.0) -> dict[str, int | None]:
        if self._stopping:
            return {}
        self._stopping = True
        codes = self.group.stop_all(grace_s=grace_s)
        return codes

    def __enter__(self) -> "GraphRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def log_dir_for(output_dir: str | os.PathLike | None) -> Path | None:
    return Path(output_dir) / "logs" if output_dir else None
