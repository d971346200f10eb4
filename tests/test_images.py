"""ROS-free image buffer validation and conversion (wvm_ros.core.images)."""
import array

import numpy as np
import pytest

from wvm_ros.core.images import ImageError, decode_image, encode_image, image_to_rgb8, to_rgb8


def _rgb(h=4, w=5):
    return (np.arange(h * w * 3) % 251).astype(np.uint8).reshape(h, w, 3)


def test_rgb8_roundtrip_and_rclpy_array_type():
    a = _rgb()
    h, w, step, data = encode_image(a, "rgb8")
    assert (h, w, step) == (4, 5, 15)
    out = image_to_rgb8("rgb8", h, w, step, array.array("B", data))
    np.testing.assert_array_equal(out, a)


def test_bgr8_rgba8_bgra8_mono8_to_rgb():
    a = _rgb()
    np.testing.assert_array_equal(image_to_rgb8("bgr8", 4, 5, 15, a[:, :, ::-1].tobytes()), a)
    rgba = np.concatenate([a, np.full((4, 5, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_rgb8("rgba8", 4, 5, 20, rgba.tobytes()), a)
    bgra = np.concatenate([a[:, :, ::-1], np.full((4, 5, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_rgb8("bgra8", 4, 5, 20, bgra.tobytes()), a)
    m = a[:, :, 0]
    out = image_to_rgb8("mono8", 4, 5, 5, m.tobytes())
    assert out.shape == (4, 5, 3) and (out[:, :, 1] == m).all()


def test_mono16_big_and_little_endian():
    v = np.array([[0x1234, 0xFF00]], dtype=np.uint16)
    le = decode_image("mono16", 1, 2, 4, v.astype("<u2").tobytes(), is_bigendian=False)
    be = decode_image("mono16", 1, 2, 4, v.astype(">u2").tobytes(), is_bigendian=True)
    assert le[0, :, 0].tolist() == [0x1234, 0xFF00] == be[0, :, 0].tolist()
    assert to_rgb8(le, "mono16")[0, :, 0].tolist() == [0x12, 0xFF]


def test_row_padding_is_stripped():
    a = _rgb(3, 2)
    padded = np.zeros((3, 8), np.uint8)
    padded[:, :6] = a.reshape(3, 6)
    np.testing.assert_array_equal(image_to_rgb8("rgb8", 3, 2, 8, padded.tobytes()), a)


@pytest.mark.parametrize("enc,h,w,step,data,match", [
    ("yuv422", 2, 2, 4, b"\0" * 8, "unsupported encoding 'yuv422'"),
    ("rgb8", 2, 2, 6, b"", "empty data"),
    ("rgb8", 0, 2, 6, b"\0", "empty image"),
    ("rgb8", 2, 2, 6, b"\0" * 5, "needs 12"),
    ("rgb8", 2, 2, 6, b"\0" * 20, "has 12"),
    ("rgb8", 2, 2, 4, b"\0" * 8, "step 4 is smaller"),
])
def test_bad_buffers_are_rejected_with_a_clear_message(enc, h, w, step, data, match):
    with pytest.raises(ImageError, match=match):
        decode_image(enc, h, w, step, data)


def test_expected_size_names_both_sizes():
    a = _rgb(4, 5)
    with pytest.raises(ImageError, match=r"wrong size 5x4 \(rgb8\); expected 96x96"):
        image_to_rgb8("rgb8", 4, 5, 15, a.tobytes(), expected_hw=(96, 96))


def test_encode_rejects_mismatched_arrays():
    with pytest.raises(ImageError, match="expected \\(H, W, 3\\)"):
        encode_image(np.zeros((2, 2, 4), np.uint8), "rgb8")
    with pytest.raises(ImageError, match="dtype float32"):
        encode_image(np.zeros((2, 2, 3), np.float32), "rgb8")
    h, w, step, data = encode_image(np.zeros((2, 3), np.uint8), "mono8")
    assert (h, w, step, len(data)) == (2, 3, 3, 6)
