"""Ground-truth progress curves of the WVM paper (arXiv 2606.24742), per frame.

Expert trajectory of T frames (the notes: "0 at 0, 1 at T-1"):
    v_t = t / (T - 1),  t = 0 .. T-1
(The paper writes the training target as v_t = t / T; we use the end-inclusive form
t / (T - 1) so that the last frame of a successful attempt is exactly 1, which is also
what the suboptimal curves below assume.)

Suboptimal trajectory of T frames with one non-progress segment [m, n], x = n - m
(frame m = first frame of the segment, frame n = first frame after it), a piecewise-linear
curve through 4 points (0, 0), (m, v_m), (n, v_n), (T - 1, 1):
    hesitation:  v_m = v_n = m / (T - 1 - x)
    retry:       v_m = m / (T - 2x),   v_n = max(0, (m - x) / (T - 2x))
All functions return float32 arrays of length T, values in [0, 1].
"""
from __future__ import annotations

import numpy as np

KINDS = ("expert", "progress", "hesitation", "retry")


def _check_T(T) -> int:
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 2:
        raise ValueError(f"T: expected the number of frames as an int >= 2, got {T!r}")
    return int(T)


def _check_segment(T: int, m, n) -> tuple[int, int]:
    try:
        m, n = int(m), int(n)
    except (TypeError, ValueError):
        raise ValueError(f"segment [m, n]: expected two frame indices, got {m!r}, {n!r}") from None
    if not (0 <= m < n <= T - 1):
        raise ValueError(f"segment [m, n]: expected 0 <= m < n <= T-1 = {T - 1}, got [{m}, {n}]")
    return m, n


def piecewise_linear(T: int, points) -> np.ndarray:
    """Per-frame curve through (frame, value) points, linear in between (frames increasing)."""
    T = _check_T(T)
    xs = np.array([p[0] for p in points], dtype=np.float64)
    ys = np.array([p[1] for p in points], dtype=np.float64)
    if np.any(np.diff(xs) < 0):
        raise ValueError(f"points: expected increasing frame indices, got {xs.tolist()}")
    return np.interp(np.arange(T, dtype=np.float64), xs, ys).astype(np.float32)


def expert_progress(T: int) -> np.ndarray:
    """v_t = t / (T - 1): 0 at the first frame, 1 at the last."""
    T = _check_T(T)
    return (np.arange(T, dtype=np.float64) / (T - 1)).astype(np.float32)


def hesitation_progress(T: int, m: int, n: int) -> np.ndarray:
    """Flat at m / (T - 1 - x) over [m, n], linear elsewhere (x = n - m)."""
    T = _check_T(T)
    m, n = _check_segment(T, m, n)
    x = n - m
    den = T - 1 - x
    if den <= 0:
        raise ValueError(f"hesitation [m, n] = [{m}, {n}] covers the whole trajectory of T = {T} frames")
    v = m / den
    return piecewise_linear(T, [(0, 0.0), (m, v), (n, v), (T - 1, 1.0)])


def retry_progress(T: int, m: int, n: int) -> np.ndarray:
    """Rises to m / (T - 2x) at m, falls to max(0, (m - x) / (T - 2x)) at n, then rises to 1."""
    T = _check_T(T)
    m, n = _check_segment(T, m, n)
    x = n - m
    den = T - 2 * x
    if den <= 0:
        raise ValueError(f"retry [m, n] = [{m}, {n}]: needs T - 2x > 0 (T = {T}, x = {x})")
    v_m = m / den
    v_n = max(0.0, (m - x) / den)
    return piecewise_linear(T, [(0, 0.0), (m, v_m), (n, v_n), (T - 1, 1.0)])


def ground_truth_progress(T: int, kind: str = "expert", segment: tuple[int, int] | None = None) -> np.ndarray:
    """Dispatch on the trajectory kind: "expert" / "progress" (no segment), "hesitation", "retry"."""
    if kind in ("expert", "progress"):
        return expert_progress(T)
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if segment is None:
        raise ValueError(f"kind {kind!r} needs its non-progress segment [m, n]")
    fn = hesitation_progress if kind == "hesitation" else retry_progress
    return fn(T, *segment)


def value_chunks(progress, h: int) -> np.ndarray:
    """(T, h) chunks: row t holds the values of frames t-h+1 .. t (oldest first; the first frame
    repeated before the start), i.e. the h "current" frames whose values a WVM chunk predicts
    when frame t is the newest. This is the per-frame `value_chunk` stored in valued datasets,
    the same layout as the live recordings (the value node's chunk at the newest frame)."""
    p = np.asarray(progress, dtype=np.float32).reshape(-1)
    if p.size == 0:
        raise ValueError("progress: expected at least one frame")
    if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
        raise ValueError(f"h: expected the chunk length as an int >= 1, got {h!r}")
    idx = np.maximum(np.arange(p.size)[:, None] - np.arange(int(h) - 1, -1, -1)[None, :], 0)
    return p[idx]
