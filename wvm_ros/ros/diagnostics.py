"""diagnostic_msgs/DiagnosticArray from the ROS-free `wvm_ros.core.diagnostics.NodeStats`.

`diagnostic_updater` is not installable here; this is the small part of it we need:

    stats = NodeStats()
    pub = DiagnosticsPublisher(node, stats, name="wvm_value: inference", hardware_id="cpu")
    # publishes /diagnostics once per `period_s`
"""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from wvm_ros.core.diagnostics import NodeStats, Report


def report_to_status(report: Report, name: str, hardware_id: str = "") -> DiagnosticStatus:
    st = DiagnosticStatus()
    st.level = bytes([int(report.level)])
    st.name = name
    st.message = report.message
    st.hardware_id = hardware_id
    st.values = [KeyValue(key=str(k), value=str(v)) for k, v in report.values.items()]
    return st


def status_level(status: DiagnosticStatus) -> int:
    lv = status.level
    return lv[0] if isinstance(lv, (bytes, bytearray)) else int(lv)


def status_values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


class DiagnosticsPublisher:
    def __init__(self, node, stats: NodeStats, name: str | None = None, hardware_id: str = "",
                 period_s: float = 1.0, topic: str = "/diagnostics"):
        self.node = node
        self.stats = stats
        self.name = name or f"{node.get_name()}"
        self.hardware_id = hardware_id
        self.pub = node.create_publisher(DiagnosticArray, topic, 10)
        self.timer = node.create_timer(period_s, self.publish)

    def publish(self) -> DiagnosticArray:
        arr = DiagnosticArray()
        arr.header.stamp = self.node.get_clock().now().to_msg()
        arr.status = [report_to_status(self.stats.report(), self.name, self.hardware_id)]
        self.pub.publish(arr)
        return arr
