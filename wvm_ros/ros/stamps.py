"""Header stamp helpers (builtin_interfaces/Time <-> float seconds)."""
from __future__ import annotations

from builtin_interfaces.msg import Time
from std_msgs.msg import Header


def stamp_to_sec(stamp: Time) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def sec_to_stamp(t: float) -> Time:
    ns = int(round(t * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def now_stamp(node) -> Time:
    return node.get_clock().now().to_msg()


def make_header(stamp: Time | float | None = None, frame_id: str = "", node=None) -> Header:
    h = Header()
    if isinstance(stamp, (int, float)):
        h.stamp = sec_to_stamp(float(stamp))
    elif stamp is not None:
        h.stamp = stamp
    elif node is not None:
        h.stamp = now_stamp(node)
    h.frame_id = frame_id
    return h


def copy_header(src: Header) -> Header:
    return Header(stamp=Time(sec=src.stamp.sec, nanosec=src.stamp.nanosec), frame_id=src.frame_id)
