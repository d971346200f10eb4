"""Calibration: synthetic round trips (known intrinsics), camera_info YAML, URL resolution,
size-mismatch refusal, and the `wvm calibrate` command on a folder of images."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from wvm_ros.core import calibration as C

K_TRUE = np.array([[600.0, 0.0, 322.0], [0.0, 605.0, 238.0], [0.0, 0.0, 1.0]])
SIZE = (640, 480)
REPO = Path(__file__).resolve().parents[1]


def _poses(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        r = np.deg2rad([rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(-15, 15)])
        t = np.array([rng.uniform(-0.12, 0.0), rng.uniform(-0.08, 0.0), rng.uniform(0.45, 0.7)])
        yield r, t


def _views(board: C.BoardSpec, n: int = 12, seed: int = 0):
    flat = C.board_image(board, 40)
    return [(f"view{i:02d}.png", C.render_board_view(board, K_TRUE, r, t, SIZE, flat=flat))
            for i, (r, t) in enumerate(_poses(n, seed))]


@pytest.mark.parametrize("board", [
    C.BoardSpec("checkerboard", 9, 6, 0.025),
    C.BoardSpec("charuco", 7, 5, 0.035, 0.026, "DICT_4X4_50"),
], ids=["checkerboard", "charuco"])
def test_synthetic_round_trip_recovers_intrinsics(board):
    res = C.calibrate_images(_views(board), board, camera_name="synthetic", min_views=8)
    K = res.calibration.K
    assert res.rms_px < 0.5, res.summary()
    assert max(res.per_view_px) < 0.5, res.summary()
    assert not res.rejected
    # focal lengths within 1 %, principal point within 3 px of the truth
    assert abs(K[0, 0] - K_TRUE[0, 0]) / K_TRUE[0, 0] < 0.01, res.summary()
    assert abs(K[1, 1] - K_TRUE[1, 1]) / K_TRUE[1, 1] < 0.01, res.summary()
    assert abs(K[0, 2] - K_TRUE[0, 2]) < 3 and abs(K[1, 2] - K_TRUE[1, 2]) < 3, res.summary()
    assert (res.calibration.width, res.calibration.height) == SIZE


def test_too_few_views_and_blank_images_are_refused():
    board = C.BoardSpec("checkerboard", 9, 6, 0.025)
    blank = [(f"blank{i}.png", np.full((480, 640), 128, np.uint8)) for i in range(3)]
    with pytest.raises(C.CalibrationError, match="only 2 views"):
        C.calibrate_images(_views(board, 2) + blank, board, min_views=8)
    with pytest.raises(C.CalibrationError, match="calibrate one resolution"):
        C.calibrate_images([("a", np.zeros((480, 640), np.uint8)), ("b", np.zeros((240, 320), np.uint8))], board)


def test_board_spec_validation():
    with pytest.raises(C.CalibrationError, match="inner|at least"):
        C.BoardSpec("checkerboard", 1, 6, 0.02)
    with pytest.raises(C.CalibrationError, match="board kind"):
        C.BoardSpec("circles", 4, 5, 0.02)
    with pytest.raises(C.CalibrationError, match="dictionary"):
        C.BoardSpec("charuco", 5, 5, 0.02, 0.015, "DICT_NOPE")
    with pytest.raises(C.CalibrationError, match="smaller than the square"):
        C.BoardSpec("charuco", 5, 5, 0.02, 0.03)


def _calib(w=640, h=480, name="cam"):
    return C.CameraCalibration(name, w, h, K_TRUE, [0.1, -0.2, 0.001, 0.002, 0.05])


def test_yaml_round_trip_in_camera_calibration_parsers_layout(tmp_path):
    path = _calib().save(tmp_path / "cam.yaml")
    raw = yaml.safe_load(path.read_text())
    assert list(raw) == ["image_width", "image_height", "camera_name", "camera_matrix", "distortion_model",
                         "distortion_coefficients", "rectification_matrix", "projection_matrix"]
    assert raw["camera_matrix"]["rows"] == 3 and raw["camera_matrix"]["cols"] == 3
    assert raw["distortion_coefficients"] == {"rows": 1, "cols": 5, "data": [0.1, -0.2, 0.001, 0.002, 0.05]}
    assert raw["projection_matrix"]["cols"] == 4
    back = C.CameraCalibration.load(path)
    np.testing.assert_allclose(back.K, K_TRUE)
    np.testing.assert_allclose(back.P[:, :3], K_TRUE)
    assert back.distortion_model == "plumb_bob" and back.camera_name == "cam"
    # the id survives a save/load round trip and changes with the intrinsics
    assert back.calibration_id() == _calib().calibration_id() and back.calibration_id().startswith("cam-")
    other = _calib()
    other.K[0, 0] += 1
    assert other.calibration_id() != back.calibration_id()


def test_bad_yaml_is_refused_with_the_file_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("image_width: 640\nfoo: 1\n")
    with pytest.raises(C.CalibrationError, match=r"bad\.yaml.*missing"):
        C.CameraCalibration.load(p)
    d = _calib().to_dict()
    d["camera_matrix"]["data"] = [1, 2, 3]
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(C.CalibrationError, match="camera_matrix"):
        C.CameraCalibration.load(p)
    with pytest.raises(C.CalibrationError, match="does not exist"):
        C.CameraCalibration.load(tmp_path / "nope.yaml")


def test_file_url_with_name_substitution_and_default_url(tmp_path, monkeypatch):
    _calib(name="wrist").save(tmp_path / "wrist.yaml")
    got = C.load_camera_info(f"file://{tmp_path}/${{NAME}}.yaml", "wrist")
    assert got.camera_name == "wrist"
    # empty URL: camera_info_manager's default under ROS_HOME; absent -> uncalibrated (None)
    monkeypatch.setenv("ROS_HOME", str(tmp_path / "roshome"))
    assert C.load_camera_info("", "front") is None
    _calib(name="front").save(tmp_path / "roshome" / "camera_info" / "front.yaml")
    assert C.load_camera_info("", "front").camera_name == "front"
    # an explicit URL to a missing file is an error, not "uncalibrated"
    with pytest.raises(C.CalibrationError, match="does not exist"):
        C.load_camera_info(f"file://{tmp_path}/missing.yaml")
    with pytest.raises(C.CalibrationError, match="unsupported scheme"):
        C.resolve_camera_info_url("http://example.com/cam.yaml")
    with pytest.raises(C.CalibrationError, match="expected a URL"):
        C.resolve_camera_info_url("/abs/path.yaml")


def test_package_url_resolves_the_shipped_example():
    path = C.resolve_camera_info_url("package://wvm_ros/calibration/example_640x480.yaml")
    assert path.is_file()
    calib = C.load_camera_info("package://wvm_ros/calibration/example_640x480.yaml")
    assert (calib.width, calib.height) == (640, 480)
    with pytest.raises(C.CalibrationError, match="not found in package 'no_such_pkg'"):
        C.resolve_camera_info_url("package://no_such_pkg/x.yaml")


def test_package_url_through_the_ament_index(tmp_path, monkeypatch):
    pytest.importorskip("ament_index_python")
    prefix = tmp_path / "prefix"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "my_cams").write_text("")
    _calib(name="top").save(prefix / "share" / "my_cams" / "calib" / "top.yaml")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    path = C.resolve_camera_info_url("package://my_cams/calib/${NAME}.yaml", "top")
    assert path == prefix / "share" / "my_cams" / "calib" / "top.yaml"


def test_size_mismatch_is_refused():
    C.check_size(_calib(), 640, 480)
    with pytest.raises(C.CalibrationSizeError, match=r"640x480 images but the stream is 320x240"):
        C.check_size(_calib(), 320, 240)


def test_wvm_calibrate_on_a_folder(tmp_path, capsys):
    from wvm_ros.cli.main import main

    board = C.BoardSpec("checkerboard", 9, 6, 0.025)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, img in _views(board, 10, seed=3):
        cv2.imwrite(str(folder / name), img)
    cv2.imwrite(str(folder / "no_board.png"), np.full((480, 640), 90, np.uint8))
    out = tmp_path / "calib" / "mycam.yaml"
    rc = main(["calibrate", "--images", str(folder), "--pattern", "checkerboard", "--size", "9x6",
               "--square", "0.025", "--camera-name", "mycam", "--output", str(out)])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert "reprojection error" in text.out and "no_board.png" in text.out
    calib = C.CameraCalibration.load(out)
    assert calib.camera_name == "mycam" and (calib.width, calib.height) == SIZE
    assert abs(calib.K[0, 0] - 600) < 6
    # a board that is not in the images: clear failure, non-zero exit
    rc = main(["calibrate", "--images", str(folder), "--size", "5x4", "--square", "0.03",
               "--output", str(tmp_path / "x.yaml")])
    assert rc != 0
    assert "views" in capsys.readouterr().err


def test_wvm_calibrate_live_from_a_replayed_video(tmp_path, capsys):
    """The live mode, fed by the camera core replaying a video of board views (any source the
    camera node takes works the same way): it keeps only views that differ, then calibrates."""
    from wvm_ros.cli.main import main

    board = C.BoardSpec("checkerboard", 9, 6, 0.025)
    video = tmp_path / "board.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, SIZE)
    for _, img in _views(board, 10, seed=5):
        for _ in range(3):  # each pose for several frames: near-duplicates must be skipped
            writer.write(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    writer.release()
    out = tmp_path / "live.yaml"
    saved = tmp_path / "views"
    rc = main(["calibrate", "--device", str(video), "--size", "9x6", "--square", "0.025", "--views", "10",
               "--interval", "0", "--fps", "300", "--timeout", "60", "--camera-name", "live", "--min-views", "6",
               "--output", str(out), "--save-images", str(saved)])
    text = capsys.readouterr()
    assert rc == 0, text.err
    kept = len(list(saved.glob("*.png")))
    assert 6 <= kept <= 10, kept  # at most one per pose (not 30); two random poses may look alike
    calib = C.CameraCalibration.load(out)
    assert abs(calib.K[0, 0] - 600) / 600 < 0.02 and abs(calib.K[1, 1] - 605) / 605 < 0.02
    m = re.search(r"reprojection error ([\d.]+) px", text.out)
    assert m and float(m.group(1)) < 0.5, text.out
