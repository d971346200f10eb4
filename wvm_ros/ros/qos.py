"""QoS profiles chosen by a parameter value.

    qos = qos_from_name(node.declare_parameter("image_qos", "reliable").value)

Names: "reliable" (reliable, keep last `depth`, volatile; the default for images between our
nodes: best-effort over the default transports loses large images), "sensor_data"
(rclpy's qos_profile_sensor_data: best effort, keep last 5), "best_effort",
"latched" (reliable + transient local, depth 1: for the task text and the like).
"""
from __future__ import annotations

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

QOS_NAMES = ("reliable", "sensor_data", "best_effort", "latched")


def qos_from_name(name: str, depth: int = 10) -> QoSProfile:
    name = (name or "reliable").strip().lower()
    if name == "reliable":
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
    if name == "sensor_data":
        return qos_profile_sensor_data
    if name == "best_effort":
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
    if name == "latched":
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                          reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    raise ValueError(f"unknown QoS profile name {name!r}; expected one of {', '.join(QOS_NAMES)}")


def reliable(depth: int = 10) -> QoSProfile:
    return qos_from_name("reliable", depth)
