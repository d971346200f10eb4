"""sensor_msgs/Image <-> numpy (what cv_bridge does; cv_bridge is not installable here).

The validation itself is ROS-free in `wvm_ros.core.images`; these wrap it for messages.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from wvm_ros.core.images import ImageError, decode_image, encode_image, image_to_rgb8, to_rgb8  # noqa: F401


def image_msg_to_rgb8(msg: Image, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an Image message; raises ImageError for unusable buffers."""
    return image_to_rgb8(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                         bool(msg.is_bigendian), expected_hw)


def image_msg_to_array(msg: Image) -> np.ndarray:
    """The Image's pixels in their own encoding, (H, W, C)."""
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))


def array_to_image_msg(arr: np.ndarray, encoding: str = "rgb8", header=None, frame_id: str = "") -> Image:
    h, w, step, data = encode_image(arr, encoding)
    msg = Image()
    if header is not None:
        msg.header = header
    elif frame_id:
        msg.header.frame_id = frame_id
    msg.height, msg.width, msg.step, msg.encoding = h, w, step, encoding
    msg.is_bigendian = 0
    msg.data = data
    return msg


def pinhole_camera_info(width: int, height: int, header=None, fov_deg: float = 60.0) -> CameraInfo:
    """A plain pinhole CameraInfo (no distortion) for a simulated camera."""
    import math

    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    info = CameraInfo()
    if header is not None:
        info.header = header
    info.width, info.height = width, height
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info
