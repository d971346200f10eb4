"""ROS helpers: Image message conversion, QoS by name, stamps, DiagnosticStatus."""
import numpy as np
import pytest

from conftest import requires_ros

pytestmark = requires_ros


def test_image_msg_roundtrip_and_rejection():
    from wvm_ros.ros.images import ImageError, array_to_image_msg, image_msg_to_rgb8, pinhole_camera_info

    a = np.random.randint(0, 255, (6, 8, 3), dtype=np.uint8)
    msg = array_to_image_msg(a, "rgb8", frame_id="cam")
    assert (msg.width, msg.height, msg.step, msg.encoding, msg.header.frame_id) == (8, 6, 24, "rgb8", "cam")
    np.testing.assert_array_equal(image_msg_to_rgb8(msg), a)
    bgr = array_to_image_msg(np.ascontiguousarray(a[:, :, ::-1]), "bgr8")
    np.testing.assert_array_equal(image_msg_to_rgb8(bgr), a)
    msg.encoding = "bayer_rggb8"
    with pytest.raises(ImageError, match="unsupported encoding 'bayer_rggb8'"):
        image_msg_to_rgb8(msg)
    info = pinhole_camera_info(640, 480)
    assert info.k[2] == pytest.approx(319.5) and info.width == 640


def test_qos_by_name():
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    from wvm_ros.ros.qos import qos_from_name

    assert qos_from_name("reliable").reliability == ReliabilityPolicy.RELIABLE
    assert qos_from_name("sensor_data").reliability == ReliabilityPolicy.BEST_EFFORT
    assert qos_from_name("latched").durability == DurabilityPolicy.TRANSIENT_LOCAL
    with pytest.raises(ValueError, match="unknown QoS profile name 'fast'"):
        qos_from_name("fast")


def test_stamps_and_diagnostic_status():
    from wvm_ros.core.diagnostics import WARN, Report
    from wvm_ros.ros.diagnostics import report_to_status, status_level, status_values
    from wvm_ros.ros.stamps import make_header, sec_to_stamp, stamp_to_sec

    t = sec_to_stamp(1700000000.123456789)
    assert (t.sec, t.nanosec) == (1700000000, 123456716) or abs(stamp_to_sec(t) - 1700000000.123456789) < 1e-6
    assert make_header(2.5, "cam").stamp.nanosec == 500000000
    st = report_to_status(Report(WARN, "no input", {"rejected frames": "3"}), "wvm_value: x", "cpu")
    assert status_level(st) == WARN and status_values(st) == {"rejected frames": "3"} and st.hardware_id == "cpu"
