"""ROS-free overlay drawing (OpenCV): the camera frame annotated with the value estimate.

    out = draw_overlay(rgb, OverlayState(progress=0.42, valid=True, task="push the T",
                                         episode="ep3 #2 RUNNING", untrained=True))

Draws, on a copy of the frame (scaled up to at least `min_width` so that text is legible):
a progress bar with the value (and, with a success classifier, its P(done) at the bar's
right end), the task text, the episode state, the model status, and a red UNTRAINED banner
when the weights are random.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class OverlayState:
    progress: float | None = None  # None or NaN: no estimate
    valid: bool = False
    task: str = ""
    episode: str = ""           # e.g. "ep-0003 attempt 2: START"
    status: str = ""            # e.g. "warming up 3/9", "inference error"
    untrained: bool = False
    model: str = ""             # e.g. "tiny@1a2b3c4d"
    success: float | None = None  # success classifier's P(done); None / NaN: no classifier


def _progress_color(p: float) -> tuple[int, int, int]:
    # red (0) -> yellow (0.5) -> green (1), RGB
    p = min(1.0, max(0.0, p))
    if p < 0.5:
        return 230, int(60 + 340 * p), 40
    return int(230 - 400 * (p - 0.5)), 230, 40


def _text(img, s, org, scale, color, thick=1):
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def _fit(s: str, max_chars: int) -> str:
    return s if len(s) <= max_chars else s[: max(0, max_chars - 3)] + "..."


def draw_overlay(frame: np.ndarray, state: OverlayState, min_width: int = 320) -> np.ndarray:
    """Return a new RGB uint8 image (H', W', 3) with the overlay drawn. `frame` is unchanged."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"draw_overlay expects an RGB uint8 image (H, W, 3), got {frame.shape} {frame.dtype}")
    h, w = frame.shape[:2]
    if w < min_width:
        s = min_width / w
        img = cv2.resize(frame, (min_width, int(round(h * s))), interpolation=cv2.INTER_NEAREST)
    else:
        img = frame.copy()
    h, w = img.shape[:2]
    scale = max(0.35, w / 900)
    line = int(22 * scale / 0.45)
    pad = max(4, w // 80)

    # dim band at the top for text
    band_h = pad + 3 * line
    img[:band_h] = (img[:band_h].astype(np.uint16) * 2 // 5).astype(np.uint8)
    chars = int(w / (11 * scale / 0.45))
    _text(img, _fit("task: " + (state.task or "(none)"), chars), (pad, pad + line - 6), scale, (255, 255, 255))
    _text(img, _fit(state.episode or "episode: -", chars), (pad, pad + 2 * line - 6), scale, (200, 220, 255))
    st = " | ".join(x for x in (state.model, state.status) if x)
    _text(img, _fit(st, chars), (pad, pad + 3 * line - 6), scale, (220, 220, 220))

    # progress bar at the bottom
    bar_h = max(10, line)
    y0, y1 = h - pad - bar_h, h - pad
    x0, x1 = pad, w - pad
    cv2.rectangle(img, (x0, y0), (x1, y1), (40, 40, 40), -1)
    p = state.progress
    have = p is not None and p == p and state.valid
    if have:
        pc = min(1.0, max(0.0, float(p)))
        cv2.rectangle(img, (x0, y0), (x0 + int((x1 - x0) * pc), y1), _progress_color(pc), -1)
        label = f"progress {pc:.2f}"
    else:
        label = "progress --"
    cv2.rectangle(img, (x0, y0), (x1, y1), (255, 255, 255), 1)
    _text(img, label, (x0 + 4, y1 - max(2, bar_h // 5)), scale, (255, 255, 255))
    ps = state.success
    if have and ps is not None and ps == ps:
        done = f"done {min(1.0, max(0.0, float(ps))):.2f}"
        (tw, _), _ = cv2.getTextSize(done, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        _text(img, done, (x1 - tw - 4, y1 - max(2, bar_h // 5)), scale,
              (120, 255, 120) if ps >= 0.5 else (255, 255, 255))

    if state.untrained:
        by0 = y0 - pad - line - 4
        cv2.rectangle(img, (0, by0), (w, by0 + line + 4), (200, 0, 0), -1)
        _text(img, "UNTRAINED MODEL: values are meaningless", (pad, by0 + line - 2), scale, (255, 255, 255))
    return img


def episode_label(episode_id: str, attempt: int, state: str) -> str:
    if not episode_id and not state:
        return "episode: -"
    return f"{episode_id or '-'} attempt {attempt}: {state or '-'}"
