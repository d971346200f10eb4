"""A probe for node tests and the demo: an in-process rclpy node that records what arrives
on chosen topics (in a background executor thread) and waits for conditions with a timeout.

    with TopicProbe({"/wvm/progress": Progress, "/diagnostics": DiagnosticArray}) as probe:
        probe.wait_for(lambda: len(probe.msgs["/wvm/progress"]) >= 3, timeout=20)
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Mapping

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile

from wvm_ros.ros.qos import reliable


class TopicProbe:
    def __init__(self, topics: Mapping[str, Any], qos: QoSProfile | None = None, name: str = "wvm_probe",
                 on_message: Callable[[str, Any], None] | None = None, keep: int = 100000):
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.msgs: dict[str, list] = {t: [] for t in topics}
        self.lock = threading.Lock()
        self.on_message = on_message
        self.keep = keep
        for topic, mtype in topics.items():
            self.node.create_subscription(mtype, topic, self._cb(topic), qos or reliable(50))
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _cb(self, topic):
        def cb(msg):
            with self.lock:
                lst = self.msgs[topic]
                lst.append(msg)
                if len(lst) > self.keep:
                    del lst[: len(lst) - self.keep]
            if self.on_message is not None:
                self.on_message(topic, msg)
        return cb

    def _spin(self):
        while not self._stop and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if self._stop:
                    break
                raise

    def get(self, topic: str) -> list:
        with self.lock:
            return list(self.msgs[topic])

    def wait_for(self, cond: Callable[[], bool], timeout: float, what: str = "condition",
                 alive: Callable[[], None] | None = None) -> None:
        """Poll `cond` until true; TimeoutError naming `what` after `timeout` s. `alive()` may
        raise (e.g. a node process died) to fail early."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if cond():
                return
            if alive is not None:
                alive()
            time.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

    def publisher(self, mtype, topic: str, qos: QoSProfile | None = None):
        return self.node.create_publisher(mtype, topic, qos or reliable())

    def call(self, srv_type, name: str, request=None, timeout: float = 10.0):
        cli = self.node.create_client(srv_type, name)
        if not cli.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {name} not available after {timeout:.0f} s")
        fut = cli.call_async(request or srv_type.Request())
        t0 = time.monotonic()
        while not fut.done():
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"service {name} did not answer in {timeout:.0f} s")
            time.sleep(0.02)
        return fut.result()

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=5)
        try:
            self.executor.shutdown(timeout_sec=1)
            self.node.destroy_node()
        finally:
            if self.context.ok():
                rclpy.shutdown(context=self.context)

    def __enter__(self) -> "TopicProbe":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
