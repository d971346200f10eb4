"""The value offset of a WVM checkpoint: fitted on validation splits, applied to what is published.

The live estimate of a trained WVM can sit at a consistently wrong level (the shipped tiny
PusHT models run low on every kind of attempt; docs/model.md, "A level bias in the live
estimate"). A constant offset, fitted as minus the mean error (estimate - ground truth) of the
raw live estimates over every scored frame of one or more *validation* splits, removes that
mean error; it is the least-squares constant. `wvm calibrate-value` fits it and writes it into
the checkpoint's config.json (`calibration`); the streaming estimator adds it to the values it
publishes (never to the prefix values the model is fed), so `wvm eval`, the value node, the
data logger's valued datasets and `wvm experiment retries` all see the same numbers.

Fit on validation data only: the benchmark's held-out split must not choose anything.
"""
from __future__ import annotations

import datetime as _dt
from typing import Sequence

import numpy as np

from wvm_ros.core import evaluation as E
from wvm_ros.core import metrics as M
from wvm_ros.core.streaming import MAX_VALUE_OFFSET

METHOD = "constant: minus the mean error of the raw live estimate over all scored frames of the fit splits"


class CalibrationFitError(ValueError):
    """The fit cannot be made (no scored frames, or an offset beyond MAX_VALUE_OFFSET)."""


def _scores(episodes: Sequence[E.EvalEpisode], preds: Sequence[np.ndarray]) -> dict:
    sc = [M.score_episode(p, ep.gt, ep.kind, ep.hesitation_segments, episode_index=ep.episode_index, task=ep.task)
          for ep, p in zip(episodes, preds)]
    agg = M.aggregate(sc)
    out = {}
    for k in M.METRIC_KEYS:
        v = agg.overall.get(k)
        out[k] = None if v is None or not np.isfinite(v) else round(float(v), 4)
    return out


def rate_mismatch(calibration: dict | None, estimate_fps: float) -> str:
    """"" when `calibration` was fitted at `estimate_fps` (or says nothing), else a sentence saying
    both rates: the mean error, and so the offset, depends on the estimate rate."""
    fitted = (calibration or {}).get("estimate_fps")
    if fitted is None or abs(float(fitted) - float(estimate_fps)) < 1e-6:
        return ""
    return (f"fitted at {float(fitted):g} estimates/s, used at {float(estimate_fps):g}: refit with "
            f"`wvm calibrate-value --estimate-fps {float(estimate_fps):g}` for this rate")


def offset_from_predictions(episodes: Sequence[E.EvalEpisode], preds: Sequence[np.ndarray]) -> tuple[float, int]:
    """(offset, frames): minus the mean of (pred - gt) over the frames with a finite estimate."""
    errs = [np.asarray(p, dtype=np.float64) - np.asarray(ep.gt, dtype=np.float64) for ep, p in zip(episodes, preds)]
    d = np.concatenate(errs) if errs else np.zeros(0)
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise CalibrationFitError("no frame with an estimate to fit the value offset on "
                                  "(expected episodes longer than the model's warm-up)")
    return float(-d.mean()), int(d.size)


def fit_value_offset(model, splits: dict[str, Sequence[E.EvalEpisode]], estimate_fps: float | None = 10.0,
                     workers: int = 1, progress: bool = True) -> dict:
    """Fit the offset on the raw live estimates of `model` over `splits` ({name: episodes}).

    Returns the `calibration` object for the checkpoint config: value_offset, method, the fit
    splits with their episode and frame counts, the estimate rate, the date, and the metrics
    on the pooled fit splits without and with the offset (in-sample: a check of the fit, not a
    score)."""
    episodes, preds, counts = [], [], []
    method = E.streaming_method(model, "raw", estimate_fps=estimate_fps, value_offset=0.0)
    for name, eps in splits.items():
        eps = list(eps)
        if not eps:
            raise CalibrationFitError(f"split {name}: no episodes")
        # one evaluate per split: its predictions are keyed by episode index, unique within a split
        by_index = E.evaluate(eps, [method], progress=progress, workers=workers).results["raw"].predictions
        part = [by_index[ep.episode_index] for ep in eps]
        counts.append({"split": name, "episodes": len(eps), "frames": int(sum(np.isfinite(p).sum() for p in part))})
        episodes.extend(eps)
        preds.extend(part)
    offset, frames = offset_from_predictions(episodes, preds)
    if abs(offset) > MAX_VALUE_OFFSET:
        raise CalibrationFitError(f"fitted value offset {offset:+.3f} is beyond +-{MAX_VALUE_OFFSET:g}: the model's "
                                  "estimates are wrong, not just shifted (expected a model trained for these splits)")
    shifted = [np.clip(p + offset, 0.0, 1.0) for p in preds]
    return {
        "value_offset": round(offset, 4),
        "method": METHOD,
        "fitted_on": counts,
        "frames": frames,
        "estimate_fps": estimate_fps or float(model.config.sample_fps),
        "checkpoint_id": getattr(model, "checkpoint_id", "?"),
        "date": _dt.date.today().isoformat(),
        "fit_metrics_raw": _scores(episodes, preds),
        "fit_metrics_calibrated": _scores(episodes, shifted),
    }
