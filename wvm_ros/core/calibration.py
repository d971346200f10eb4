"""Camera intrinsics: calibration with OpenCV and camera_info YAML files. ROS-free.

* `CameraCalibration`: one monocular calibration, read and written in the
  camera_calibration_parsers YAML layout that ROS drivers and ``camera_info_manager`` use
  (``image_width``, ``image_height``, ``camera_name``, ``camera_matrix``,
  ``distortion_model``, ``distortion_coefficients``, ``rectification_matrix``,
  ``projection_matrix``; each matrix as ``{rows, cols, data}``).
* `resolve_camera_info_url` / `load_camera_info`: ``file://`` and ``package://`` URLs with
  ``${NAME}`` and ``${ROS_HOME}`` substitution, as camera_info_manager resolves them. An
  empty URL means camera_info_manager's default, ``file://${ROS_HOME}/camera_info/${NAME}.yaml``
  (uncalibrated when that file does not exist). ``package://`` resolves through the ament
  index when the package is registered there, else through the installed share folder
  (``<prefix>/share/<pkg>``) or, for wvm_ros, the source tree.
* `check_size`: a calibration made at another resolution is refused with a clear error
  (intrinsics scale with the image; silently publishing them would be wrong).
* `BoardSpec`, `detect_board`, `calibrate`: checkerboard (inner-corner count, as
  ROS camera_calibration's ``--size``) and ChArUco (square count) intrinsics with
  ``cv2.calibrateCamera``; `CalibrationResult` carries the RMS reprojection error and
  per-view errors. The projection matrix is ``getOptimalNewCameraMatrix`` with alpha 0,
  as ROS camera_calibration's monocular calibrator writes it.
* `render_board_view`: a synthetic, exactly known view of a board (for tests and demos).
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import yaml

DISTORTION_MODELS = {"plumb_bob": 5, "rational_polynomial": 8}
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the source tree (repo root) of wvm_ros


class CalibrationError(ValueError):
    """A calibration file, URL or input that cannot be used; the message says why."""


class CalibrationSizeError(CalibrationError):
    """The calibration's image size is not the size of the stream."""


# --------------------------------------------------------------------------------------
# camera_info YAML
# --------------------------------------------------------------------------------------
@dataclass
class CameraCalibration:
    camera_name: str
    width: int
    height: int
    K: np.ndarray  # 3x3
    D: np.ndarray  # (n,)
    distortion_model: str = "plumb_bob"
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    P: np.ndarray | None = None  # 3x4; defaults to [K | 0]

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.D = np.asarray(self.D, dtype=np.float64).reshape(-1)
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        if self.P is None:
            self.P = np.hstack([self.K, np.zeros((3, 1))])
        self.P = np.asarray(self.P, dtype=np.float64).reshape(3, 4)

    def to_dict(self) -> dict:
        def mat(a: np.ndarray, rows: int, cols: int) -> dict:
            return {"rows": rows, "cols": cols, "data": [float(x) for x in np.asarray(a).reshape(-1)]}

        return {
            "image_width": int(self.width),
            "image_height": int(self.height),
            "camera_name": self.camera_name,
            "camera_matrix": mat(self.K, 3, 3),
            "distortion_model": self.distortion_model,
            "distortion_coefficients": mat(self.D, 1, len(self.D)),
            "rectification_matrix": mat(self.R, 3, 3),
            "projection_matrix": mat(self.P, 3, 4),
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "CameraCalibration":
        if not isinstance(d, dict):
            raise CalibrationError(f"{source}: expected a camera_info YAML mapping, got {type(d).__name__}")
        missing = [k for k in ("image_width", "image_height", "camera_matrix", "distortion_coefficients")
                   if k not in d]
        if missing:
            raise CalibrationError(f"{source}: not a camera_info YAML file (missing {', '.join(missing)}); "
                                   "expected the camera_calibration_parsers layout")

        def mat(key: str, rows: int | None, cols: int | None) -> np.ndarray:
            m = d[key]
            try:
                data = np.asarray(m["data"], dtype=np.float64)
                r, c = int(m["rows"]), int(m["cols"])
            except (KeyError, TypeError, ValueError) as e:
                raise CalibrationError(f"{source}: {key} must be {{rows, cols, data}}: {e}") from e
            if data.size != r * c or (rows is not None and r != rows) or (cols is not None and c != cols):
                raise CalibrationError(f"{source}: {key} is {r}x{c} with {data.size} values; expected "
                                       f"{rows or r}x{cols or c}")
            return data.reshape(r, c)

        K = mat("camera_matrix", 3, 3)
        D = mat("distortion_coefficients", None, None).reshape(-1)
        model = d.get("distortion_model", "plumb_bob")
        R = mat("rectification_matrix", 3, 3) if "rectification_matrix" in d else np.eye(3)
        P = mat("projection_matrix", 3, 4) if "projection_matrix" in d else None
        try:
            w, h = int(d["image_width"]), int(d["image_height"])
        except (TypeError, ValueError) as e:
            raise CalibrationError(f"{source}: image_width/image_height must be integers: {e}") from e
        if w <= 0 or h <= 0:
            raise CalibrationError(f"{source}: image size {w}x{h} must be positive")
        return cls(str(d.get("camera_name", "camera")), w, h, K, D, model, R, P)

    def calibration_id(self) -> str:
        """Short content hash of the intrinsics (name, size, model, K, D, R, P): what the logger's
        `calibration_id` parameter records, so a bag says which calibration it was made with."""
        import hashlib

        d = self.to_dict()
        return f"{self.camera_name}-{hashlib.sha256(yaml.safe_dump(d, sort_keys=True).encode()).hexdigest()[:8]}"

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CameraCalibration":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise CalibrationError(f"calibration file {path} does not exist") from None
        except yaml.YAMLError as e:
            raise CalibrationError(f"calibration file {path} is not valid YAML: {e}") from e
        return cls.from_dict(data, source=str(path))


def ros_home() -> Path:
    if os.environ.get("ROS_HOME"):
        return Path(os.environ["ROS_HOME"]).expanduser()
    return Path.home() / ".ros"


def _package_share(package: str) -> list[Path]:
    """Candidate share folders of a package: ament index first, then fallbacks."""
    out: list[Path] = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            out.append(Path(get_package_share_directory(package)))
        except (PackageNotFoundError, LookupError, ValueError):
            pass
    except ImportError:
        pass
    out.append(Path(sys.prefix) / "share" / package)
    if package == "wvm_ros":
        out.append(PACKAGE_ROOT)
    return out


def resolve_camera_info_url(url: str, camera_name: str = "camera") -> Path:
    """The file a camera_info URL names (camera_info_manager semantics). Raises
    CalibrationError for an unsupported scheme or an unknown package."""
    text = (url or "").strip()
    if not text:
        text = "file://${ROS_HOME}/camera_info/${NAME}.yaml"
    text = text.replace("${NAME}", camera_name).replace("${ROS_HOME}", str(ros_home()))
    if text.startswith("file://"):
        return Path(text[len("file://"):]).expanduser()
    if text.startswith("package://"):
        rest = text[len("package://"):]
        if "/" not in rest:
            raise CalibrationError(f"camera_info_url {url!r}: expected package://<package>/<path>")
        package, rel = rest.split("/", 1)
        tried = []
        for share in _package_share(package):
            cand = share / rel
            tried.append(str(cand))
            if cand.is_file():
                return cand
        raise CalibrationError(f"camera_info_url {url!r}: {rel} not found in package {package!r} "
                               f"(tried: {', '.join(tried)})")
    if re.match(r"^[a-z]+://", text):
        raise CalibrationError(f"camera_info_url {url!r}: unsupported scheme; expected file:// or package://")
    raise CalibrationError(f"camera_info_url {url!r}: expected a URL (file:///abs/path.yaml or "
                           "package://<package>/<path>)")


def load_camera_info(url: str, camera_name: str = "camera") -> CameraCalibration | None:
    """The calibration a URL names; None when the URL is empty and the default file
    (``${ROS_HOME}/camera_info/${NAME}.yaml``) does not exist (camera uncalibrated)."""
    path = resolve_camera_info_url(url, camera_name)
    if not (url or "").strip() and not path.is_file():
        return None
    return CameraCalibration.load(path)


def check_size(calib: CameraCalibration, width: int, height: int, source: str = "") -> None:
    if (calib.width, calib.height) != (int(width), int(height)):
        where = f" ({source})" if source else ""
        raise CalibrationSizeError(
            f"calibration{where} of camera {calib.camera_name!r} is for {calib.width}x{calib.height} "
            f"images but the stream is {width}x{height}; recalibrate at this size (wvm calibrate) or set "
            f"the camera's width/height to {calib.width}x{calib.height}")


# --------------------------------------------------------------------------------------
# boards and calibration
# --------------------------------------------------------------------------------------
@dataclass
class BoardSpec:
    """A calibration target.

    checkerboard: ``cols`` x ``rows`` INNER corners (a board of 10x7 squares has 9x6).
    charuco: ``cols`` x ``rows`` SQUARES, ``marker_size`` the ArUco marker side,
    ``dictionary`` an OpenCV name such as ``DICT_4X4_50``. Sizes in metres.
    """

    kind: str = "checkerboard"
    cols: int = 9
    rows: int = 6
    square_size: float = 0.025
    marker_size: float = 0.0
    dictionary: str = "DICT_4X4_50"

    def __post_init__(self) -> None:
        if self.kind not in ("checkerboard", "charuco"):
            raise CalibrationError(f"board kind {self.kind!r}: expected 'checkerboard' or 'charuco'")
        if self.cols < 2 or self.rows < 2:
            raise CalibrationError(f"board {self.cols}x{self.rows}: expected at least 2x2")
        if self.square_size <= 0:
            raise CalibrationError(f"board square size {self.square_size}: expected > 0 (metres)")
        if self.kind == "charuco":
            if self.cols < 3 or self.rows < 3:
                raise CalibrationError(f"ChArUco board {self.cols}x{self.rows} squares: expected at least 3x3")
            if self.marker_size <= 0:
                self.marker_size = 0.75 * self.square_size
            if self.marker_size >= self.square_size:
                raise CalibrationError(f"ChArUco marker size {self.marker_size} must be smaller than the "
                                       f"square size {self.square_size}")
            if not hasattr(cv2.aruco, self.dictionary):
                raise CalibrationError(f"ArUco dictionary {self.dictionary!r} unknown; expected e.g. "
                                       "DICT_4X4_50, DICT_5X5_100, DICT_6X6_250")

    def charuco_board(self) -> "cv2.aruco.CharucoBoard":
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.cols, self.rows), self.square_size, self.marker_size, dictionary)

    def object_points(self) -> np.ndarray:
        """All board corners in the board frame (N x 3, metres)."""
        if self.kind == "charuco":
            return np.asarray(self.charuco_board().getChessboardCorners(), np.float32).reshape(-1, 3)
        grid = np.mgrid[0:self.cols, 0:self.rows].T.reshape(-1, 2).astype(np.float32)
        return np.hstack([grid * self.square_size, np.zeros((len(grid), 1), np.float32)])

    def describe(self) -> str:
        if self.kind == "charuco":
            return (f"ChArUco {self.cols}x{self.rows} squares of {self.square_size * 1000:g} mm, "
                    f"markers {self.marker_size * 1000:g} mm, {self.dictionary}")
        return f"checkerboard {self.cols}x{self.rows} inner corners, squares of {self.square_size * 1000:g} mm"


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def detect_board(board: BoardSpec, image: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(object points N x 3, image points N x 2) of the board in an image, or None."""
    gray = _gray(image)
    if board.kind == "checkerboard":
        flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK
        found, corners = cv2.findChessboardCorners(gray, (board.cols, board.rows), flags)
        if not found:
            return None
        corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1),
                                   (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3))
        return board.object_points(), corners.reshape(-1, 2).astype(np.float32)
    cb = board.charuco_board()
    detector = cv2.aruco.CharucoDetector(cb)
    ch_corners, ch_ids, _, _ = detector.detectBoard(gray)
    if ch_ids is None or len(ch_ids) < 6:  # fewer than 6 corners constrain too little
        return None
    obj, img = cb.matchImagePoints(ch_corners, ch_ids)
    return obj.reshape(-1, 3).astype(np.float32), img.reshape(-1, 2).astype(np.float32)


@dataclass
class CalibrationResult:
    calibration: CameraCalibration
    rms_px: float  # RMS reprojection error over all corners
    per_view_px: list[float]  # RMS per view
    view_names: list[str]
    rejected: list[str]  # images where the board was not found

    def summary(self) -> str:
        K = self.calibration.K
        worst = max(range(len(self.per_view_px)), key=lambda i: self.per_view_px[i])
        return (f"{len(self.per_view_px)} views used, {len(self.rejected)} without a board; "
                f"reprojection error {self.rms_px:.3f} px RMS (worst view {self.view_names[worst]}: "
                f"{self.per_view_px[worst]:.3f} px); fx={K[0, 0]:.2f} fy={K[1, 1]:.2f} "
                f"cx={K[0, 2]:.2f} cy={K[1, 2]:.2f}; D={np.array2string(self.calibration.D, precision=4)}")


def calibrate(views: Sequence[tuple[np.ndarray, np.ndarray]], image_size: tuple[int, int],
              camera_name: str = "camera", distortion_model: str = "plumb_bob",
              view_names: Sequence[str] | None = None, rejected: Iterable[str] = (),
              min_views: int = 8) -> CalibrationResult:
    """Intrinsics from detected views (object points, image points) of images of ``image_size``
    (width, height)."""
    if distortion_model not in DISTORTION_MODELS:
        raise CalibrationError(f"distortion model {distortion_model!r}: expected one of {', '.join(DISTORTION_MODELS)}")
    if len(views) < min_views:
        raise CalibrationError(f"only {len(views)} views with the board found; need at least {min_views} "
                               "(move the board over the whole image, tilted, near and far)")
    names = list(view_names) if view_names is not None else [f"view{i}" for i in range(len(views))]
    obj = [np.asarray(o, np.float32).reshape(-1, 1, 3) for o, _ in views]
    img = [np.asarray(i, np.float32).reshape(-1, 1, 2) for _, i in views]
    flags = cv2.CALIB_RATIONAL_MODEL if distortion_model == "rational_polynomial" else 0
    w, h = int(image_size[0]), int(image_size[1])
    rms, K, D, rvecs, tvecs = cv2.calibrateCamera(obj, img, (w, h), None, None, flags=flags)
    D = np.asarray(D).reshape(-1)[:DISTORTION_MODELS[distortion_model]]
    per_view = []
    for o, i, r, t in zip(obj, img, rvecs, tvecs):
        proj, _ = cv2.projectPoints(o, r, t, K, D)
        per_view.append(float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - i.reshape(-1, 2)) ** 2, axis=1)))))
    P, _ = cv2.getOptimalNewCameraMatrix(K, D, (w, h), 0.0)
    calib = CameraCalibration(camera_name, w, h, K, D, distortion_model, np.eye(3),
                              np.hstack([P, np.zeros((3, 1))]))
    return CalibrationResult(calib, float(rms), per_view, names, list(rejected))


def calibrate_images(images: Iterable[tuple[str, np.ndarray]], board: BoardSpec, camera_name: str = "camera",
                     distortion_model: str = "plumb_bob", min_views: int = 8) -> CalibrationResult:
    """Detect the board in every (name, image) and calibrate. All images must have one size."""
    views, names, rejected = [], [], []
    size = None
    for name, image in images:
        h, w = image.shape[:2]
        if size is None:
            size = (w, h)
        elif size != (w, h):
            raise CalibrationError(f"image {name} is {w}x{h} but earlier images are {size[0]}x{size[1]}; "
                                   "calibrate one resolution at a time")
        found = detect_board(board, image)
        if found is None:
            rejected.append(name)
        else:
            views.append(found)
            names.append(name)
    if size is None:
        raise CalibrationError("no images to calibrate from")
    return calibrate(views, size, camera_name, distortion_model, names, rejected, min_views)


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")


def read_image_folder(folder: str | os.PathLike) -> list[tuple[str, np.ndarray]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"image folder {folder} does not exist")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise CalibrationError(f"image folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    out = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise CalibrationError(f"cannot read image {p}")
        out.append((p.name, img))
    return out


# --------------------------------------------------------------------------------------
# synthetic views
# --------------------------------------------------------------------------------------
def board_image(board: BoardSpec, px_per_square: int = 60, margin_squares: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A flat, high-resolution picture of the board (grey uint8) and the 3x3 affine matrix that
    maps board-frame metres (X, Y, 1) to its pixel coordinates (pixel centres at integers)."""
    margin = int(round(margin_squares * px_per_square))
    if board.kind == "charuco":
        squares = (board.cols, board.rows)
    else:
        squares = (board.cols + 1, board.rows + 1)
    size = (squares[0] * px_per_square + 2 * margin, squares[1] * px_per_square + 2 * margin)
    s = px_per_square / board.square_size
    if board.kind == "charuco":
        img = board.charuco_board().generateImage(size, marginSize=margin, borderBits=1)
        origin = margin - 0.5  # board corner (0, 0)
    else:
        img = np.full((size[1], size[0]), 255, np.uint8)
        for j in range(squares[1]):
            for i in range(squares[0]):
                if (i + j) % 2 == 0:
                    y0, x0 = margin + j * px_per_square, margin + i * px_per_square
                    img[y0:y0 + px_per_square, x0:x0 + px_per_square] = 0
        origin = margin + px_per_square - 0.5  # the first inner corner
    A = np.array([[s, 0, origin], [0, s, origin], [0, 0, 1]], np.float64)
    return img, A


def render_board_view(board: BoardSpec, K: np.ndarray, rvec: np.ndarray, tvec: np.ndarray,
                      image_size: tuple[int, int], background: int = 128,
                      flat: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """A pinhole (distortion-free) view of the board at pose (rvec, tvec), rendered with
    warpPerspective: grey uint8 of ``image_size`` (width, height)."""
    img, A = flat if flat is not None else board_image(board)
    R, _ = cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3))
    H_plane = np.asarray(K, np.float64) @ np.column_stack([R[:, 0], R[:, 1], np.asarray(tvec, np.float64).reshape(3)])
    H = H_plane @ np.linalg.inv(A)  # board pixels -> image pixels
    return cv2.warpPerspective(img, H, tuple(int(v) for v in image_size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=background)
