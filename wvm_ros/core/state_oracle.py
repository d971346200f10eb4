"""Privileged-state estimators: how far can the value benchmark go without pixels?

A WVM sees camera frames; the simulator knows its exact state (for PushT: agent x, y, block x,
y, angle, and the block's coverage of the goal). A regressor fitted on that state, with the
same temporal context as the model, gives a reference for what the context makes possible:
where the state oracle itself cannot reach a target, a better image model with the same
context will not either. Three contexts, all causal (frame i uses frames up to i only):

  state_window   the WVM's context: the attempt's first frame (the prefix) and the frames
                 0, 0.5, 1.0, 1.5 s back (h = 4 frames 0.5 s apart);
  state_window_elapsed
                 state_window plus the seconds since the attempt began (the context of a WVM
                 built with `elapsed_input`);
  state_5s       the first frame and the frames 0, 0.5, ..., 5 s back;
  state_history  state_5s plus the elapsed time, each state coordinate's distance travelled
                 so far and the best coverage so far (everything a causal estimator can know).

The regressor is scikit-learn's HistGradientBoostingRegressor (targets: the dataset's ground
truth). `wvm experiment state-oracle` fits one per context on training datasets and scores it
with the same benchmark code as `wvm eval` (docs/evaluation.md, docs/model.md).

`StateOracleEstimator` streams a fitted oracle's estimates from a live simulator's state, with
the interface the retries experiment and its calibration use for the WVM
(`wvm experiment retries|calibrate --state-oracle NAME`): success detection with perfect
perception and the same value target, as a reference for the model's (docs/closing_the_loop.md).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from wvm_ros.core.evaluation import EvalEpisode, Method

__all__ = ["OracleSpec", "SPECS", "features", "fit_oracle", "oracle_method", "spec_by_name", "StateOracleEstimator",
           "STATE_KEY", "COVERAGE_KEY"]

STATE_KEY = "observation.state"
COVERAGE_KEY = "coverage"


@dataclass(frozen=True)
class OracleSpec:
    name: str
    lags_s: tuple[float, ...]  # how far back each frame is taken, seconds
    history: bool = False  # add elapsed time, distance travelled per coordinate, best coverage so far
    elapsed: bool = False  # add the elapsed time alone (implied by history)

    def __post_init__(self):
        if not self.lags_s or any(lag < 0 for lag in self.lags_s):
            raise ValueError(f"oracle {self.name}: lags_s must be non-negative seconds, got {self.lags_s}")


SPECS = (
    OracleSpec("state_window", (0.0, 0.5, 1.0, 1.5)),
    OracleSpec("state_window_elapsed", (0.0, 0.5, 1.0, 1.5), elapsed=True),
    OracleSpec("state_5s", tuple(0.5 * k for k in range(11))),
    OracleSpec("state_history", tuple(0.5 * k for k in range(11)), history=True),
)


def spec_by_name(name: str) -> OracleSpec:
    for spec in SPECS:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown state oracle {name!r}; expected one of {[s.name for s in SPECS]}")


def _columns(ep: EvalEpisode, state_key: str, coverage_key: str | None) -> np.ndarray:
    if state_key not in ep.extras:
        raise KeyError(f"episode {ep.episode_index}: no {state_key!r} column loaded (have {sorted(ep.extras)}); "
                       "load the dataset with extra_keys=[state_key, ...]")
    cols = [np.asarray(ep.extras[state_key], dtype=np.float64).reshape(ep.num_frames, -1)]
    if coverage_key is not None:
        if coverage_key not in ep.extras:
            raise KeyError(f"episode {ep.episode_index}: no {coverage_key!r} column loaded (have {sorted(ep.extras)})")
        cols.append(np.asarray(ep.extras[coverage_key], dtype=np.float64).reshape(ep.num_frames, -1))
    return np.concatenate(cols, axis=1)


def features(x: np.ndarray, timestamps: np.ndarray, spec: OracleSpec, coverage_col: int | None = None) -> np.ndarray:
    """Causal per-frame features of one attempt.

    x: (T, d) per-frame state (and coverage); timestamps: (T,) increasing seconds. Row i holds
    x at the newest frame at or before t_i - lag for each lag (the first frame where that is
    before the attempt), then x at frame 0; with spec.history also t_i - t_0, the cumulative
    absolute change of each column up to i, and the running maximum of column `coverage_col`;
    with spec.elapsed (and no history) t_i - t_0 alone.
    """
    x = np.asarray(x, dtype=np.float64)
    ts = np.asarray(timestamps, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(ts):
        raise ValueError(f"features: expected x (T, d) and timestamps (T,), got {x.shape} and {ts.shape}")
    if len(ts) > 1 and not np.all(np.diff(ts) > 0):
        raise ValueError("features: timestamps must increase strictly")
    T = len(x)
    parts = []
    for lag in spec.lags_s:
        j = np.searchsorted(ts, ts - lag + 1e-9, side="right") - 1
        parts.append(x[np.clip(j, 0, T - 1)])
    parts.append(np.broadcast_to(x[:1], x.shape))
    if spec.elapsed and not spec.history:
        parts.append((ts - ts[0])[:, None])
    if spec.history:
        parts.append((ts - ts[0])[:, None])
        parts.append(np.cumsum(np.abs(np.diff(x, axis=0, prepend=x[:1])), axis=0))
        if coverage_col is not None:
            parts.append(np.maximum.accumulate(x[:, coverage_col])[:, None])
    return np.concatenate(parts, axis=1)


def _episode_features(ep: EvalEpisode, spec: OracleSpec, state_key: str, coverage_key: str | None) -> np.ndarray:
    x = _columns(ep, state_key, coverage_key)
    return features(x, ep.timestamps, spec, coverage_col=x.shape[1] - 1 if coverage_key else None)


def fit_oracle(episodes: Sequence[EvalEpisode], spec: OracleSpec, *, state_key: str = STATE_KEY,
               coverage_key: str | None = COVERAGE_KEY, seed: int = 0):
    """Fit a HistGradientBoostingRegressor from the causal features to each frame's ground truth."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    if not episodes:
        raise ValueError("fit_oracle: no training episodes")
    X = np.concatenate([_episode_features(ep, spec, state_key, coverage_key) for ep in episodes])
    y = np.concatenate([ep.gt for ep in episodes])
    # Large leaves: the fit sees a few hundred attempts and would otherwise learn them by heart
    # (in-sample Hesitation-RMSE 0.02, validation 0.095 with small leaves; docs/model.md).
    leaf = int(min(1000, max(20, len(y) // 50)))
    reg = HistGradientBoostingRegressor(learning_rate=0.05, max_iter=200, min_samples_leaf=leaf, random_state=seed)
    reg.fit(X, y)
    reg.wvm_spec = spec
    reg.wvm_training = {"episodes": len(episodes), "frames": int(len(y)), "min_samples_leaf": leaf,
                        "state_key": state_key, "coverage_key": coverage_key}
    return reg


def oracle_method(reg, *, state_key: str = STATE_KEY, coverage_key: str | None = COVERAGE_KEY) -> Method:
    """A benchmark Method from a fitted oracle (predictions clipped to [0, 1])."""
    spec: OracleSpec = reg.wvm_spec

    def predict(ep: EvalEpisode) -> np.ndarray:
        return np.clip(reg.predict(_episode_features(ep, spec, state_key, coverage_key)), 0.0, 1.0)

    info = {"kind": "privileged simulator state, no pixels", "lags_s": list(spec.lags_s),
            "history": spec.history, "elapsed": spec.elapsed or spec.history, **reg.wvm_training}
    return Method(spec.name, predict, info)


class StateOracleEstimator:
    """Live estimates of a fitted oracle from a simulator's exact state (experiments only).

    Drop-in for `StreamingValueEstimator` where the retries experiment uses it: `reset()` per
    attempt, `push(frame, stamp_s)` per taken camera frame (the frame is ignored; the state is
    read with `read_state()`, which returns the state followed by the coverage, as the columns
    the oracle was fitted on), `estimate_fps`. Like the WVM it gives its first estimate
    `warmup_s` into the attempt. The features of the history context (distance travelled so
    far) assume frames at the training datasets' rate: keep estimate_fps at their fps (10).
    """

    def __init__(self, reg, read_state: Callable[[], np.ndarray], estimate_fps: float = 10.0,
                 warmup_s: float = 0.5):
        if not hasattr(reg, "wvm_spec"):
            raise ValueError("StateOracleEstimator: expected a regressor from fit_oracle (it has no wvm_spec)")
        if not estimate_fps or estimate_fps <= 0:
            raise ValueError(f"StateOracleEstimator: estimate_fps must be > 0, got {estimate_fps!r}")
        self.reg = reg
        self.spec: OracleSpec = reg.wvm_spec
        self.read_state = read_state
        self.estimate_fps = float(estimate_fps)
        self.warmup_s = float(warmup_s)
        self._coverage_col = -1 if reg.wvm_training.get("coverage_key") else None
        self.reset()

    def reset(self) -> None:
        self._x: list[np.ndarray] = []
        self._t: list[float] = []

    def push(self, frame, stamp_s: float):
        from wvm_ros.core.streaming import ValueEstimate

        t0 = time.perf_counter()
        if self._t and stamp_s <= self._t[-1]:
            return None
        self._x.append(np.asarray(self.read_state(), dtype=np.float64).ravel())
        self._t.append(float(stamp_s))
        if stamp_s - self._t[0] < self.warmup_s - 1e-9:
            return None
        x = np.stack(self._x)
        cov = None if self._coverage_col is None else x.shape[1] - 1
        f = features(x, np.asarray(self._t), self.spec, coverage_col=cov)[-1:]
        p = float(np.clip(self.reg.predict(f)[0], 0.0, 1.0))
        return ValueEstimate(progress=p, chunk=np.array([p], dtype=np.float32), stamp_s=float(stamp_s),
                             latency_s=time.perf_counter() - t0, valid=True, status="ok")
