"""`wvm calibrate`: camera intrinsics (checkerboard or ChArUco) to a camera_info YAML file.

From a folder of images:
    wvm calibrate --images shots/ --size 9x6 --square 0.025 --camera-name front
From a live camera (any source the camera node takes: index, /dev/videoN, URL, pipeline):
    wvm calibrate --device /dev/video0 --width 640 --height 480 --size 9x6 --square 0.025 \
        --camera-name front --views 20
Writes calibration/<camera-name>.yaml (camera_calibration_parsers layout) and prints the
reprojection error and the camera_info_url to give the camera node.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HELP = "camera intrinsics calibration to camera_info YAML"


def _size(text: str) -> tuple[int, int]:
    try:
        c, r = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected COLSxROWS such as 9x6, got {text!r}") from None
    return c, r


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="folder of images of the board (png, jpg, ...)")
    src.add_argument("--device", metavar="SRC",
                     help="live camera: index, /dev/videoN, rtsp/http URL, GStreamer pipeline or video file")
    p.add_argument("--pattern", choices=["checkerboard", "charuco"], default="checkerboard",
                   help="board type (default: checkerboard)")
    p.add_argument("--size", type=_size, required=True, metavar="COLSxROWS",
                   help="checkerboard: INNER corners (a 10x7-square board is 9x6); charuco: squares")
    p.add_argument("--square", type=float, required=True, metavar="M", help="square side in metres")
    p.add_argument("--marker", type=float, default=0.0, metavar="M",
                   help="charuco: marker side in metres (default 0.75 x square)")
    p.add_argument("--dictionary", default="DICT_4X4_50", help="charuco: ArUco dictionary (default DICT_4X4_50)")
    p.add_argument("--camera-name", default="camera", help="camera_name written in the file (default: camera)")
    p.add_argument("--output", metavar="YAML",
                   help="output file (default: calibration/<camera-name>.yaml in the current folder)")
    p.add_argument("--distortion-model", choices=["plumb_bob", "rational_polynomial"], default="plumb_bob")
    p.add_argument("--min-views", type=int, default=8, help="fewest views with the board (default 8)")
    live = p.add_argument_group("live camera")
    live.add_argument("--views", type=int, default=20, help="views to collect (default 20)")
    live.add_argument("--interval", type=float, default=1.0, help="seconds between collected views (default 1)")
    live.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds (default 300)")
    live.add_argument("--width", type=int, default=0, help="requested width (default: the camera's)")
    live.add_argument("--height", type=int, default=0, help="requested height (default: the camera's)")
    live.add_argument("--fps", type=float, default=0.0, help="requested frame rate (default: the camera's)")
    live.add_argument("--save-images", metavar="DIR", help="also save the collected views here (png)")


def _collect_live(args, board) -> list[tuple[str, np.ndarray]]:
    import cv2
    from tqdm import tqdm

    from wvm_ros.core.calibration import detect_board
    from wvm_ros.core.camera import CameraConfig, CameraStream

    cam = CameraStream(CameraConfig(device=args.device, width=args.width, height=args.height, fps=args.fps,
                                    loop_file=False))
    collected: list[tuple[str, np.ndarray]] = []
    centres: list[np.ndarray] = []
    save = Path(args.save_images) if args.save_images else None
    if save:
        save.mkdir(parents=True, exist_ok=True)
    print(f"move the board ({board.describe()}) over the whole image, tilted, near and far", file=sys.stderr)
    deadline = time.monotonic() + args.timeout
    last = 0.0
    try:
        with tqdm(total=args.views, desc="views", unit="view") as bar:
            while len(collected) < args.views and time.monotonic() < deadline:
                frame = cam.read()
                if frame is None:
                    if cam.stats.state == "ended":
                        break
                    continue
                if time.monotonic() - last < args.interval:
                    continue
                bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
                found = detect_board(board, bgr)
                if found is None:
                    continue
                pts = found[1]
                # a new view must differ from every kept one (position or apparent size)
                h, w = bgr.shape[:2]
                feat = np.array([pts[:, 0].mean() / w, pts[:, 1].mean() / h,
                                 np.ptp(pts[:, 0]) / w, np.ptp(pts[:, 1]) / h])
                if centres and min(np.abs(c - feat).max() for c in centres) < 0.05:
                    continue
                centres.append(feat)
                name = f"view{len(collected):03d}.png"
                collected.append((name, bgr))
                if save:
                    cv2.imwrite(str(save / name), bgr)
                last = time.monotonic()
                bar.update(1)
    finally:
        cam.close()
    if cam.stats.frames == 0:
        raise RuntimeError(f"no frames from camera {args.device!r} ({cam.stats.last_error or 'nothing delivered'})")
    return collected


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from wvm_ros.core.calibration import BoardSpec, CalibrationError, calibrate_images, read_image_folder
    from wvm_ros.core.camera import CameraError

    try:
        board = BoardSpec(args.pattern, args.size[0], args.size[1], args.square, args.marker, args.dictionary)
        if args.images:
            images = read_image_folder(args.images)
            images = list(tqdm(images, desc="images", unit="img", disable=len(images) < 5))
        else:
            images = _collect_live(args, board)
        result = calibrate_images(images, board, args.camera_name, args.distortion_model, args.min_views)
    except (CalibrationError, CameraError, RuntimeError) as e:
        print(f"wvm calibrate: {e}", file=sys.stderr)
        return 1
    out = Path(args.output or Path("calibration") / f"{args.camera_name}.yaml")
    result.calibration.save(out)
    print(f"board: {board.describe()}")
    if result.rejected:
        print(f"no board found in: {', '.join(result.rejected)}")
    print(result.summary())
    if result.rms_px > 1.0:
        print("warning: reprojection error above 1 px: check the square size, blur, and that the board is flat")
    print(f"wrote {out} (calibration id {result.calibration.calibration_id()}: set it as wvm_logger's "
          "calibration_id to record it in every bag)")
    print(f"camera node parameter: camera_info_url:=file://{out.resolve()}")
    return 0
