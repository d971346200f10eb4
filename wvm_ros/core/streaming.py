"""Streaming value estimation: camera frames in, progress out (ROS-free).

    est = StreamingValueEstimator(model, "push the T onto the target")
    est.reset()                                   # at every attempt start
    e = est.push(frame_rgb_uint8, stamp_s)        # ValueEstimate, or None while warming up

* Sampling: frames arrive at the camera rate; one frame is taken into the window every
  1 / config.sample_fps seconds *by stamp* (a grid anchored at the first frame; after a gap
  longer than one period the grid restarts at the new frame). Frames between samples return
  the latest estimate unchanged (same `stamp_s`), so a node can skip republishing it.
* Cache: each sampled frame is encoded once (`model.encode_frames`); windows reuse the latents.
* Window: [prefix frame, h current frames] = the last 1 + h sampled frames; at the start of an
  attempt the window is padded with the first frame (as in training).
* Overlap: windows advance one sampled frame at a time, so every sampled frame is predicted by
  up to h windows; their predictions are averaged. The prefix value of a window is the averaged
  estimate of its prefix frame (all windows that cover it are done by then; 0 at the start).
* `progress` is the averaged estimate of the newest sampled frame plus the model's value
  offset (`value_offset`, from the checkpoint's `calibration`; 0 when it has none), clipped to
  [0, 1]. The offset is a constant fitted on validation splits (`wvm calibrate-value`) that
  removes the mean error of the published values; it is never added to the prefix values the
  model is fed (those stay what the model was trained on). `value_offset=0.0` gives the raw
  estimate.
* Elapsed time: every prediction is given the seconds from the attempt's first frame to the
  window's newest frame; a model built with `elapsed_input` uses it (reset the estimator at
  every attempt start: the value node does), the others ignore it. Past the model's
  `elapsed_max_s` (no reset for that long) the estimate stays valid, but its `status` says
  that the attempt clock is at its limit.
* Dense mode (`estimate_fps`, a multiple of sample_fps, e.g. 10 with sample_fps 2): frames
  are taken at `estimate_fps` and every taken frame gets its own estimate, from the window
  of frames spaced 1 / sample_fps apart that ends at it (K = estimate_fps / sample_fps
  interleaved windows, each with the spacing the model was trained on). Each frame is still
  encoded once; it costs K times the predictions per second and removes the zero-order hold
  between 2 Hz estimates. `estimate_fps=None` (default) is the paper's stream, one estimate
  per sampled frame.
* Stamps: a frame must be stamped later than the newest frame pushed so far. One stamped
  earlier by at most `backward_tolerance_s` (BACKWARD_TOLERANCE_S, 1 s: jitter, a second
  publisher on the topic) is dropped and counted as stale; one stamped further back starts
  over as after `reset()` (a replayed bag restarting), counted. A repeated stamp is counted and
  not used; a stamp of 0 (an unset ROS header.stamp) is rejected and counted, except as the
  first frame after a reset (offline episodes count seconds from 0); with
  `reject_zero_stamps=True` (the value node) it is always rejected. Rejected frames return the
  latest estimate unchanged; `frame_status` says why the last frame was not used, `counts`
  keeps the totals and `stamp_problem` says when STALLED_FRAMES frames in a row did not
  advance the stamp (no estimate can come from them). A non-finite stamp raises ValueError.
* Non-finite model output (NaN / inf in the chunk from `predict_chunk`): the estimate is
  returned with valid=False and a status saying so; its values are not kept, so later windows'
  prefix values and averages are not poisoned. Counted in `counts`.
"""
from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
import torch


BACKWARD_TOLERANCE_S = 1.0   # a stamp at most this far behind the newest is stale (dropped); further: start over
MAX_VALUE_OFFSET = 0.5      # a larger calibration offset means the model, not its level, is wrong
STALLED_FRAMES = 10          # frames in a row that do not advance the stamp before `stamp_problem` says so

# `counts` keys (also the value node's diagnostics counter names)
ZERO_STAMPS = "frames with stamp 0"
REPEATED_STAMPS = "frames with a repeated stamp"
STALE_FRAMES = "stale frames (stamp went back)"
RESTARTS = "restarts (stamp jumped back)"
NON_FINITE = "non-finite model outputs"
COUNT_KEYS = (ZERO_STAMPS, REPEATED_STAMPS, STALE_FRAMES, RESTARTS, NON_FINITE)
ZERO_STAMP_STATUS = ("frame stamp is 0 (header.stamp not set?): frame not used; expected stamps that advance "
                     "with every frame")
NON_FINITE_STATUS = "non-finite model output"   # how the status of such an estimate starts


def resolve_value_offset(model, value_offset: float | None = None) -> float:
    """The offset added to published values: `value_offset`, or the model's own
    (`model.value_offset`, 0 when it has none). Must be finite and within +-0.5."""
    off = getattr(model, "value_offset", 0.0) if value_offset is None else value_offset
    try:
        off = float(off)
    except (TypeError, ValueError):
        raise ValueError(f"value_offset: expected a number, got {off!r}") from None
    if not math.isfinite(off) or abs(off) > MAX_VALUE_OFFSET:
        raise ValueError(f"value_offset: expected a finite number within +-{MAX_VALUE_OFFSET:g}, got {off!r}")
    return off


@dataclass
class ValueEstimate:
    progress: float          # in [0, 1]; NaN when not valid (e.g. a non-finite model output)
    chunk: np.ndarray        # [h] float32: values of the h current frames, oldest first
    stamp_s: float           # stamp of the newest frame used
    latency_s: float         # compute time of this estimate
    valid: bool
    status: str
    success: float = float("nan")  # P(task done | this frame) from a success classifier; NaN: none


def dense_factor(sample_fps: float, estimate_fps: float | None) -> int:
    """K = estimate_fps / sample_fps, which must be a whole number >= 1 (None -> 1)."""
    if estimate_fps is None:
        return 1
    ratio = float(estimate_fps) / float(sample_fps)
    k = int(round(ratio))
    if k < 1 or abs(ratio - k) > 1e-6:
        raise ValueError(f"estimate_fps must be a whole multiple (>= 1) of the model's sample_fps "
                         f"{sample_fps:g}, got {estimate_fps!r}")
    return k


class StreamingValueEstimator:
    def __init__(self, model, task: str = "", estimate_fps: float | None = None,
                 backward_tolerance_s: float = BACKWARD_TOLERANCE_S, reject_zero_stamps: bool = False,
                 value_offset: float | None = None):
        self.value_offset = resolve_value_offset(model, value_offset)
        tol = float(backward_tolerance_s)
        if not math.isfinite(tol) or tol < 0:
            raise ValueError(f"backward_tolerance_s must be a finite number of seconds >= 0, "
                             f"got {backward_tolerance_s!r}")
        self.backward_tolerance_s = tol
        self.reject_zero_stamps = bool(reject_zero_stamps)
        self.counts: Counter = Counter({k: 0 for k in COUNT_KEYS})   # totals, kept across resets
        self.frame_status = ""       # why the last pushed frame was not used ("" when it was)
        self._stalled = 0            # frames in a row that did not advance the stamp
        self._stall_stamp: float | None = None
        self.model = model
        self.config = model.config
        self.h = int(self.config.h)
        self.k = dense_factor(float(self.config.sample_fps), estimate_fps)
        self.estimate_fps = float(self.config.sample_fps) * self.k
        self.period = 1.0 / self.estimate_fps       # grid on which frames are taken
        self.sample_period = 1.0 / float(self.config.sample_fps)   # spacing of a window's frames
        self._text = None
        self.task = ""
        self.set_task(task)
        self.reset()

    # ---- control --------------------------------------------------------------------------
    def set_task(self, text: str) -> None:
        """Embed the instruction once (cached by the model per instruction)."""
        if not isinstance(text, str):
            raise TypeError(f"task must be a str, got {type(text).__name__}")
        self.task = text
        self._text = self.model.embed_text(text)

    def reset(self) -> None:
        """New attempt: clear the window, cached encodings, predictions and the prefix value."""
        self._latents: deque = deque(maxlen=1 + self.h * self.k)   # (sample index, stamp, latent [C, h, w])
        self._first_latent = None
        self._first_stamp: float | None = None
        self._chunk_idx: list[int] = []
        self._preds: dict[int, list[float]] = {}
        self._n = 0                  # sampled frames so far
        self._grid_t: float | None = None
        self._last_stamp: float | None = None
        self._last: ValueEstimate | None = None

    @property
    def num_sampled(self) -> int:
        return self._n

    def chunk_indices(self) -> list[int]:
        """Sample indices of the h current frames of the latest window (-1: padding)."""
        return list(self._chunk_idx)

    def _dense_window(self, stamp_s: float) -> list[tuple[int, torch.Tensor]]:
        """[prefix, h current] for the window ending now: for each time stamp_s - j / sample_fps
        the taken frame nearest to it (the attempt's first frame before the attempt began)."""
        out = []
        for j in range(self.h, -1, -1):
            target = stamp_s - j * self.sample_period
            if target < self._first_stamp - 0.5 * self.period:
                out.append((-1, self._first_latent))
                continue
            i, _, x = min(self._latents, key=lambda e: abs(e[1] - target))
            out.append((i, x))
        return out

    def averaged(self, index: int) -> float | None:
        p = self._preds.get(index)
        return float(np.mean(p)) if p else None

    # ---- frames ---------------------------------------------------------------------------
    def _validate(self, frame) -> None:
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            desc = (f"shape {frame.shape} dtype {frame.dtype}" if isinstance(frame, np.ndarray)
                    else type(frame).__name__)
            raise ValueError(f"frame must be an np.ndarray [H, W, 3] uint8 RGB, got {desc}")

    @property
    def stamp_problem(self) -> str:
        """Non-empty while the last STALLED_FRAMES or more frames all failed to advance the stamp."""
        if self._stalled < STALLED_FRAMES:
            return ""
        what = ("stamped 0 (not set)" if self._stall_stamp is None else
                f"stamped 0, repeated or older than the newest frame used ({self._stall_stamp:.3f} s)")
        return (f"frames have no increasing header.stamp: {STALLED_FRAMES} or more frames in a row {what}; "
                f"estimates need stamps that advance with every frame (does the image publisher set header.stamp?)")

    def _check_stamp(self, stamp_s: float) -> bool:
        """False (counted, `frame_status` says why) for a frame that must not be used; starts over
        on a stamp far behind the newest one."""
        last = self._last_stamp
        if stamp_s == 0.0 and (self.reject_zero_stamps or last is not None):
            self.counts[ZERO_STAMPS] += 1
            self.frame_status = ZERO_STAMP_STATUS
            return False
        if last is not None and stamp_s <= last + 1e-6:
            back = last - stamp_s
            if back <= 1e-6:
                self.counts[REPEATED_STAMPS] += 1
                self.frame_status = (f"frame stamp {stamp_s:.3f} s repeats the newest frame's: frame not used; "
                                     f"expected stamps that advance with every frame")
                return False
            if back <= self.backward_tolerance_s:
                self.counts[STALE_FRAMES] += 1
                self.frame_status = (f"stale frame: stamp {stamp_s:.3f} s is {back:.3f} s older than the newest "
                                     f"frame's ({last:.3f} s): dropped (up to backward_tolerance_s "
                                     f"{self.backward_tolerance_s:g} s behind is dropped, further starts over)")
                return False
            # time went back a lot (a replayed bag restarting, a new attempt without reset): start over
            self.counts[RESTARTS] += 1
            self.reset()
            self.frame_status = (f"stamp went back {back:.3f} s (from {last:.3f} s to {stamp_s:.3f} s, more than "
                                 f"backward_tolerance_s {self.backward_tolerance_s:g} s): started over")
            return True
        self.frame_status = ""
        return True

    def _take(self, stamp_s: float) -> bool:
        """Decide whether this stamp is taken (a grid at estimate_fps, which defaults to sample_fps)."""
        if self._grid_t is None:
            self._grid_t = stamp_s
            return True
        nxt = self._grid_t + self.period
        if stamp_s + 1e-6 < nxt:
            return False
        self._grid_t = nxt if stamp_s - nxt < self.period else stamp_s
        return True

    def push(self, frame: np.ndarray, stamp_s: float) -> ValueEstimate | None:
        """Take one camera frame (uint8 RGB [H, W, 3]) with its stamp (seconds); returns the
        latest estimate (None while warming up)."""
        steps = self._push_steps(frame, stamp_s)
        try:
            req = next(steps)
            while True:
                req = steps.send(self._run_request(req))
        except StopIteration as done:
            return done.value

    def _run_request(self, req: tuple):
        """One model call that `_push_steps` asked for, on its own (batch 1)."""
        if req[0] == "encode":
            return self.model.encode_frames(req[1][None])[0]
        _, window, prefix_value, elapsed = req
        with torch.no_grad():
            return self.model.predict_chunk(window, prefix_value, self._text,
                                            elapsed_s=elapsed)[0].float().cpu().numpy()

    def _push_steps(self, frame: np.ndarray, stamp_s: float):
        """`push` as a generator that leaves its two model calls to the caller: it yields
        ("encode", frame) and expects the frame's latent [C, h, w] back, then yields ("predict",
        window [1, 1 + h, C, h, w], prefix_value [1], elapsed_s [1]) and expects the chunk [h]
        (numpy float) back; it returns what `push` returns. `push` answers each request on its
        own; `estimate_episodes` answers those of many attempts with one batched call each."""
        self._validate(frame)
        stamp_s = float(stamp_s)
        if not math.isfinite(stamp_s):
            raise ValueError(f"stamp_s must be a finite number of seconds, got {stamp_s!r}")
        if not self._check_stamp(stamp_s):
            if self._stalled == 0:
                self._stall_stamp = self._last_stamp
            self._stalled += 1
            return self._last
        self._stalled = 0
        self._last_stamp = stamp_s
        if not self._take(stamp_s):
            return self._last
        t0 = time.perf_counter()
        latent = yield ("encode", frame)
        idx = self._n
        self._n += 1
        if self._first_latent is None:
            self._first_latent = latent
        self._latents.append((idx, stamp_s, latent))
        if self._first_stamp is None:
            self._first_stamp = stamp_s
        if self.k == 1:
            if self._n < int(self.config.min_frames):
                return None
            # window [prefix, h current] = the last 1 + h sampled frames, padded at the start of
            # an attempt with its first frame (as in training)
            lat = [x for _, _, x in self._latents]
            entries = [(i, x) for i, _, x in self._latents]
            entries = [(-1, self._first_latent)] * ((1 + self.h) - len(lat)) + entries
        else:
            if stamp_s - self._first_stamp < (int(self.config.min_frames) - 1) * self.sample_period - 0.5 * self.period:
                return None
            entries = self._dense_window(stamp_s)
        window = torch.stack([x for _, x in entries])[None]
        self._chunk_idx = [i for i, _ in entries[1:]]
        prefix_index = entries[0][0]
        prefix = self.averaged(prefix_index) if prefix_index >= 0 else None
        prefix_value = 0.0 if prefix is None else prefix
        # seconds since the attempt's first frame (the reset): models with an elapsed-time input
        # use it, the others ignore it
        elapsed = torch.tensor([stamp_s - self._first_stamp], device=window.device)
        chunk = yield ("predict", window, torch.tensor([prefix_value], device=window.device), elapsed)
        if not np.all(np.isfinite(chunk)):
            # kept out of the averages: later windows' prefix values and estimates stay finite
            self.counts[NON_FINITE] += 1
            bad = int(np.sum(~np.isfinite(chunk)))
            self._last = ValueEstimate(
                progress=float("nan"), chunk=chunk.astype(np.float32), stamp_s=stamp_s,
                latency_s=time.perf_counter() - t0, valid=False,
                status=(f"{NON_FINITE_STATUS}: predict_chunk gave {bad} NaN/inf of {chunk.size} values for the "
                        f"window ending at stamp {stamp_s:.3f} s (expected finite values; estimate not used)"))
            return self._last
        for j, k in enumerate(self._chunk_idx):
            if k >= 0:
                self._preds.setdefault(k, []).append(float(chunk[j]))
        for k in [k for k in self._preds if k < idx - 2 * self.h * self.k]:
            del self._preds[k]
        progress = float(np.clip(self.averaged(idx) + self.value_offset, 0.0, 1.0))
        status = "ok" if not getattr(self.model, "untrained", False) else "untrained model"
        limit = float(getattr(self.config, "elapsed_max_s", 0.0) or 0.0)
        if getattr(self.config, "elapsed_input", False) and limit > 0 and stamp_s - self._first_stamp > limit:
            status = (f"attempt clock at its limit: {stamp_s - self._first_stamp:.0f} s since the last reset "
                      f"> elapsed_max_s {limit:g} s (reset the estimator at every attempt start)")
        self._last = ValueEstimate(progress=progress, chunk=chunk.astype(np.float32), stamp_s=stamp_s,
                                   latency_s=time.perf_counter() - t0, valid=True, status=status)
        return self._last


class _EpisodeRun:
    """One recorded attempt pushed frame by frame through its own StreamingValueEstimator, with
    the bookkeeping `estimate_episode` returns."""

    def __init__(self, model, frames, stamps, task: str, estimate_fps, value_offset):
        if len(frames) != len(stamps):
            raise ValueError(f"frames and stamps differ in length: {len(frames)} vs {len(stamps)}")
        self.est = StreamingValueEstimator(model, task, estimate_fps=estimate_fps, value_offset=value_offset)
        self.frames, self.stamps, self.n = frames, stamps, len(frames)
        self.online = np.full(self.n, np.nan, dtype=np.float64)
        self.sample_idx = np.full(self.n, -1, dtype=np.int64)
        self.sampled = np.zeros(self.n, dtype=bool)
        self.all_preds: dict[int, list[float]] = {}
        self._last = np.nan
        self._before = 0

    def start(self, i: int):
        """The generator of frame i's push (see StreamingValueEstimator._push_steps)."""
        self._before = self.est.num_sampled
        return self.est._push_steps(np.asarray(self.frames[i]), float(self.stamps[i]))

    def push(self, i: int) -> None:
        """Frame i through the estimator's own `push` (model calls one by one)."""
        self._before = self.est.num_sampled
        self.finish(i, self.est.push(np.asarray(self.frames[i]), float(self.stamps[i])))

    def finish(self, i: int, e) -> None:
        est = self.est
        if est.num_sampled > self._before:
            self.sampled[i] = True
            for kk in est.chunk_indices():
                if kk in est._preds:
                    self.all_preds[kk] = list(est._preds[kk])
        self.sample_idx[i] = est.num_sampled - 1
        if e is not None and e.valid:
            self._last = e.progress
        self.online[i] = self._last

    def result(self) -> dict[str, np.ndarray]:
        off = self.est.value_offset
        final = {k: float(np.clip(np.mean(v) + off, 0, 1)) for k, v in self.all_preds.items()}
        smoothed = np.array([final.get(int(k), np.nan) for k in self.sample_idx], dtype=np.float32)
        return {"online": self.online, "smoothed": smoothed, "sampled": self.sampled}


def estimate_episode(model, frames, stamps, task: str, estimate_fps: float | None = None,
                     value_offset: float | None = None) -> dict[str, np.ndarray]:
    """Run the streaming estimator over one recorded attempt.

    Returns per input frame: `online` (what the estimator reported at that frame, i.e. the
    latest valid estimate; NaN while warming up) and `smoothed` (the final overlap-averaged
    estimate of the latest sampled frame at or before it, i.e. what an offline pass over the
    whole attempt gives), plus `sampled` (bool mask of the frames taken into windows). Both
    include the value offset (`value_offset`, default the model's own; 0.0: raw estimates)."""
    run = _EpisodeRun(model, frames, stamps, task, estimate_fps, value_offset)
    for i in range(run.n):
        run.push(i)
    return run.result()


def estimate_episodes(model, episodes, estimate_fps: float | None = None,
                      value_offset: float | None = None) -> list[dict[str, np.ndarray]]:
    """`estimate_episode` for several recorded attempts at once: `episodes` is a sequence of
    (frames, stamps, task). Each attempt has its own estimator, and they advance together frame
    by frame; at each step the frames of all attempts that need encoding go through one
    `encode_frames` call and their windows through one `predict_chunk` call (frames of one shape
    and instructions of one embedding shape together; others in calls of their own). Each
    attempt's estimates are those of its own pass up to float rounding: a batched call sums in
    another order (differences of about 1e-7 here). On a CPU with one torch thread a tiny WVM
    estimate costs about 5 ms in batches of 8 or more, against about 23 ms one by one."""
    runs = [_EpisodeRun(model, f, s, t, estimate_fps, value_offset) for f, s, t in episodes]
    if not runs:
        return []
    for i in range(max(r.n for r in runs)):
        pending = []                                   # (run, generator, request)
        for r in runs:
            if i < r.n:
                _advance(r, i, r.start(i), None, pending, first=True)
        for kind in ("encode", "predict"):
            asks = [p for p in pending if p[2][0] == kind]
            pending = [p for p in pending if p[2][0] != kind]
            for group in _groups(asks, kind):
                for (r, gen, _), answer in zip(group, _answer(model, group, kind)):
                    _advance(r, i, gen, answer, pending)
        if pending:   # a push asks for at most one encoding, then one prediction
            raise RuntimeError(f"estimate_episodes: unexpected request {pending[0][2][0]!r} at frame {i}")
    return [r.result() for r in runs]


def _advance(run: _EpisodeRun, i: int, gen, answer, pending: list, first: bool = False) -> None:
    try:
        req = next(gen) if first else gen.send(answer)
    except StopIteration as done:
        run.finish(i, done.value)
        return
    pending.append((run, gen, req))


def _groups(asks: list, kind: str) -> list[list]:
    """Requests that can share one call: frames of one shape / windows, texts of one shape."""
    out: dict = {}
    for a in asks:
        r, _, req = a
        key = (tuple(req[1].shape),) if kind == "encode" else (tuple(req[1].shape), tuple(r.est._text.shape),
                                                               str(req[1].device))
        out.setdefault(key, []).append(a)
    return list(out.values())


def _answer(model, group: list, kind: str) -> list:
    if kind == "encode":
        with torch.no_grad():
            lat = model.encode_frames(np.stack([req[1] for _, _, req in group]))
        return [lat[j] for j in range(len(group))]
    window = torch.cat([req[1] for _, _, req in group])
    prefix = torch.cat([req[2] for _, _, req in group])
    elapsed = torch.cat([req[3] for _, _, req in group])
    text = torch.cat([r.est._text for r, _, _ in group])
    with torch.no_grad():
        chunks = model.predict_chunk(window, prefix, text, elapsed_s=elapsed).float().cpu().numpy()
    return [chunks[j] for j in range(len(group))]
