"""ROS-free image buffer validation and conversion (what cv_bridge does, without ROS).

A `sensor_msgs/Image` is (encoding, height, width, step, is_bigendian, data). These
functions check such a buffer and turn it into a numpy array, and back. Every rejection
raises `ImageError` with a message that names the encoding and the expected size, so the
node can log it once and count it.

    arr = decode_image("rgb8", 96, 96, 288, data)          # (96, 96, 3) uint8, a view of data
    rgb = to_rgb8(arr, "bgr8")                              # (96, 96, 3) uint8 RGB
    rgb = image_to_rgb8("mono8", h, w, step, data, expected_hw=(96, 96))
    h, w, step, data = encode_image(rgb, "rgb8")
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ImageError(ValueError):
    """An image buffer that cannot be used (unknown encoding, wrong size, empty data...)."""


@dataclass(frozen=True)
class Encoding:
    channels: int
    dtype: np.dtype


# The encodings of sensor_msgs/image_encodings.hpp that a value model can consume.
ENCODINGS: dict[str, Encoding] = {
    "rgb8": Encoding(3, np.dtype(np.uint8)),
    "bgr8": Encoding(3, np.dtype(np.uint8)),
    "rgba8": Encoding(4, np.dtype(np.uint8)),
    "bgra8": Encoding(4, np.dtype(np.uint8)),
    "mono8": Encoding(1, np.dtype(np.uint8)),
    "8UC1": Encoding(1, np.dtype(np.uint8)),
    "8UC3": Encoding(3, np.dtype(np.uint8)),  # treated as bgr8, as OpenCV does
    "rgb16": Encoding(3, np.dtype(np.uint16)),
    "bgr16": Encoding(3, np.dtype(np.uint16)),
    "mono16": Encoding(1, np.dtype(np.uint16)),
    "16UC1": Encoding(1, np.dtype(np.uint16)),
}


def supported_encodings() -> list[str]:
    return sorted(ENCODINGS)


def decode_image(encoding: str, height: int, width: int, step: int, data,
                 is_bigendian: bool = False) -> np.ndarray:
    """Validate an Image buffer and return it as an array (H, W, C) of the encoding's dtype.

    Raises ImageError naming the encoding and the size the buffer was expected to have.
    """
    enc = ENCODINGS.get(encoding)
    if enc is None:
        raise ImageError(f"unsupported encoding {encoding!r}; expected one of {', '.join(supported_encodings())}")
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image ({width}x{height}, encoding {encoding}); expected a positive width and height")
    if isinstance(data, np.ndarray):
        buf = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    else:  # bytes, bytearray, array.array('B') (what rclpy gives), memoryview
        buf = np.frombuffer(data, dtype=np.uint8) if len(data) else np.zeros(0, np.uint8)
    if buf.size == 0:
        raise ImageError(f"empty data for a {width}x{height} {encoding} image")
    row = width * enc.channels * enc.dtype.itemsize
    if step < row:
        raise ImageError(f"step {step} is smaller than a {width}-pixel {encoding} row ({row} bytes)")
    need = step * (height - 1) + row
    if buf.size < need:
        raise ImageError(
            f"data has {buf.size} bytes; a {width}x{height} {encoding} image with step {step} needs "
            f"{step * height} (at least {need})")
    if buf.size > step * height:
        raise ImageError(
            f"data has {buf.size} bytes; a {width}x{height} {encoding} image with step {step} has {step * height}")
    if buf.size < step * height:  # last row without padding: copy into a full buffer
        full = np.zeros(step * height, np.uint8)
        full[:buf.size] = buf
        buf = full
    rows = buf.reshape(height, step)[:, :row]
    arr = rows.view(enc.dtype) if enc.dtype.itemsize == 1 else np.ascontiguousarray(rows).view(enc.dtype)
    if enc.dtype.itemsize > 1:
        order = ">" if is_bigendian else "<"
        arr = arr.view(arr.dtype.newbyteorder(order)).astype(enc.dtype.newbyteorder("="))
    return arr.reshape(height, width, enc.channels)


def to_rgb8(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a decoded array (H, W, C) of `encoding` to contiguous RGB uint8 (H, W, 3)."""
    if encoding not in ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}; expected one of {', '.join(supported_encodings())}")
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    c = arr.shape[2]
    if c == 1:
        out = np.repeat(arr, 3, axis=2)
    elif encoding.startswith("bgr") or encoding == "8UC3":
        out = arr[:, :, 2::-1]
    else:  # rgb*, rgba*
        out = arr[:, :, :3]
    return np.ascontiguousarray(out)


def image_to_rgb8(encoding: str, height: int, width: int, step: int, data,
                  is_bigendian: bool = False, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Validate + convert in one call. With `expected_hw`, a different size is rejected."""
    if expected_hw is not None and (height, width) != tuple(expected_hw):
        eh, ew = expected_hw
        raise ImageError(f"wrong size {width}x{height} ({encoding}); expected {ew}x{eh}")
    return to_rgb8(decode_image(encoding, height, width, step, data, is_bigendian), encoding)


def encode_image(arr: np.ndarray, encoding: str = "rgb8") -> tuple[int, int, int, bytes]:
    """(height, width, step, data) of an array for an Image of `encoding` (no padding)."""
    enc = ENCODINGS.get(encoding)
    if enc is None:
        raise ImageError(f"unsupported encoding {encoding!r}; expected one of {', '.join(supported_encodings())}")
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] != enc.channels:
        raise ImageError(f"array of shape {tuple(np.asarray(arr).shape)} does not fit {encoding}; "
                         f"expected (H, W, {enc.channels})")
    if a.dtype != enc.dtype:
        raise ImageError(f"array of dtype {a.dtype} does not fit {encoding}; expected {enc.dtype}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError(f"empty array of shape {a.shape} for {encoding}")
    a = np.ascontiguousarray(a)
    h, w = a.shape[:2]
    return h, w, w * enc.channels * enc.dtype.itemsize, a.tobytes()
