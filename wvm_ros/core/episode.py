"""Episode state machine: online success / stall / regression / timeout detection and retries.

ROS-free. The policy node (and `wvm experiment retries`, in-process) feed it progress
values with their times; it decides when an attempt has succeeded or failed, when to
retry, and emits one :class:`Event` per transition, each with a human-readable reason.
Event kinds are the names of the ``wvm_msgs/EpisodeEvent`` constants.

States::

    IDLE --start_episode--> RUNNING --(SUCCESS | STALL | REGRESSION | TIMEOUT |
         ABORT | HUMAN_LABEL) + END--> SUCCEEDED or FAILED --begin_reset--> RESETTING
    RESETTING --reset_done(ok), retry wanted--> RUNNING        (RETRY + START)
    RESETTING --reset_done(ok), episode over--> IDLE
    RESETTING --reset_done(failed)---------> IDLE             (ABORT: reset failed)

One *episode* is a sequence of *attempts* at the same task that ends at the first success
or after ``max_attempts`` attempts. Rules (all times in seconds, progress in [0, 1]):

* success (``success_source``): ``"progress"``: progress >= ``success_threshold`` continuously
  for ``success_dwell_s``; once the dwell has begun it survives dips down to
  ``success_threshold - success_hysteresis`` (hysteresis), a lower value restarts it.
  ``"classifier"``: the same rule on the success classifier's probability
  (``wvm_msgs/Progress.success``) with ``success_prob_threshold`` / ``success_prob_dwell_s`` and
  the same hysteresis; samples without a probability (NaN) neither start nor break its dwell.
  ``"either"``: whichever of the two fires first (the progress rule alone while no probability
  arrives);
* stall: over the last ``stall_window_s`` the progress gained less than ``stall_min_gain``
  (max of the window minus its first value), checked once the attempt has run a whole window
  and only while the dwell has not begun;
* regression: progress fell by more than ``regression_drop`` below the maximum of the last
  ``regression_window_s``;
* timeout: the attempt ran ``timeout_s`` (time spent holding does not count);
* hold / resume (stale values, decided by the caller's watchdog): while holding no decision
  is taken; resuming clears the windows so that the gap is not read as a stall.
* a human label (success / failure / abort) ends the running attempt with that outcome and
  wins over the model; given after the attempt ended it overrides the recorded outcome.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

IDLE = "IDLE"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
RESETTING = "RESETTING"
STATES = (IDLE, RUNNING, SUCCEEDED, FAILED, RESETTING)

# EpisodeEvent kinds (names of the wvm_msgs/EpisodeEvent constants)
EVENT_KINDS = ("START", "SUCCESS", "STALL", "REGRESSION", "TIMEOUT", "RETRY", "ABORT",
               "HUMAN_LABEL", "END", "HOLD", "RESUME", "FAILURE")
OUTCOMES = ("success", "failure", "abort")
SUCCESS_SOURCES = ("progress", "classifier", "either")


class EpisodeError(RuntimeError):
    """A call that the current state does not allow (names the state and what was expected)."""


@dataclass
class EpisodeConfig:
    """Detection and retry parameters. Defaults were measured on the PushT simulator with the
    shipped tiny WVM (docs/closing_the_loop.md)."""

    # 0.9 chosen on the raw values of the shipped model, + its value offset (+0.021, rounded):
    # the same decisions on the calibrated values it publishes (docs/closing_the_loop.md)
    success_threshold: float = 0.92
    success_hysteresis: float = 0.05
    success_dwell_s: float = 2.2
    success_source: str = "either"          # progress | classifier | either
    success_prob_threshold: float = 0.99
    success_prob_dwell_s: float = 0.3
    stall_window_s: float = 6.0
    stall_min_gain: float = 0.03
    regression_window_s: float = 3.0
    regression_drop: float = 0.35
    timeout_s: float = 40.0
    max_attempts: int = 3
    retries: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(cond: bool, name: str, expected: str) -> None:
            if not cond:
                raise ValueError(f"episode config: {name}={getattr(self, name)!r}, expected {expected}")
        need(0.0 < self.success_threshold <= 1.0, "success_threshold", "in (0, 1]")
        need(0.0 <= self.success_hysteresis < self.success_threshold, "success_hysteresis",
             "in [0, success_threshold)")
        need(self.success_dwell_s >= 0.0, "success_dwell_s", ">= 0")
        need(self.success_source in SUCCESS_SOURCES, "success_source", f"one of {', '.join(SUCCESS_SOURCES)}")
        need(0.0 < self.success_prob_threshold <= 1.0, "success_prob_threshold", "in (0, 1]")
        need(self.success_hysteresis < self.success_prob_threshold, "success_hysteresis",
             "below success_prob_threshold too")
        need(self.success_prob_dwell_s >= 0.0, "success_prob_dwell_s", ">= 0")
        need(self.stall_window_s > 0.0, "stall_window_s", "> 0")
        need(self.stall_min_gain >= 0.0, "stall_min_gain", ">= 0 (0 disables stall detection)")
        need(self.regression_window_s > 0.0, "regression_window_s", "> 0")
        need(self.regression_drop > 0.0, "regression_drop", "> 0 (use > 1 to disable)")
        need(self.timeout_s > 0.0, "timeout_s", "> 0")
        need(int(self.max_attempts) >= 1, "max_attempts", ">= 1")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "EpisodeConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"episode config: unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**dict(values))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Event:
    kind: str
    t: float
    episode_id: str
    attempt: int
    progress: float = math.nan
    reason: str = ""
    outcome: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AttemptRecord:
    attempt: int
    t_start: float
    t_end: float | None = None
    outcome: str = ""          # success / failure / abort
    kind: str = ""             # the event that decided it (SUCCESS, STALL, ..., HUMAN_LABEL)
    reason: str = ""
    labelled: bool = False     # a human label decided or overrode it
    held_s: float = 0.0


def _dwell(since: float | None, t: float, value: float, threshold: float, hysteresis: float) -> float | None:
    """When the dwell began (None: not dwelling): it begins at the first value >= threshold and
    survives values down to threshold - hysteresis."""
    if value >= threshold:
        return float(t) if since is None else since
    return None if value < threshold - hysteresis else since


def _fmt(p: float) -> str:
    return "nan" if p is None or math.isnan(p) else f"{p:.3f}"


class EpisodeStateMachine:
    """The episode / attempt state machine. Feed it with :meth:`update` (progress) and
    :meth:`tick` (time only); every method returns the list of events it emitted."""

    def __init__(self, config: EpisodeConfig | None = None, episode_id: str = "episode-0"):
        self.config = config or EpisodeConfig()
        self.config.validate()
        self.state = IDLE
        self.episode_id = episode_id
        self.attempt = 0
        self.attempts: list[AttemptRecord] = []
        self.events: list[Event] = []
        self.last_progress = math.nan
        self.holding = False
        self._reset_attempt_tracking(0.0)

    # ------------------------------------------------------------------ helpers
    def _reset_attempt_tracking(self, t: float) -> None:
        self._t_start = t
        self._t_window_origin = t          # windows only count samples after this time
        self._held_s = 0.0
        self._hold_since: float | None = None
        self._samples: deque[tuple[float, float]] = deque()
        self._dwell_since: float | None = None
        self._pdwell_since: float | None = None   # dwell of the success probability

    def _emit(self, kind: str, t: float, reason: str = "", outcome: str = "",
              progress: float | None = None) -> Event:
        ev = Event(kind, float(t), self.episode_id, self.attempt,
                   self.last_progress if progress is None else float(progress), reason, outcome)
        self.events.append(ev)
        return ev

    def _require(self, method: str, *states: str) -> None:
        if self.state not in states:
            raise EpisodeError(f"{method}() in state {self.state}; expected state {' or '.join(states)}")

    @property
    def current(self) -> AttemptRecord | None:
        return self.attempts[-1] if self.attempts else None

    def elapsed(self, t: float) -> float:
        """Active time of the running attempt (time spent holding excluded)."""
        held = self._held_s + ((t - self._hold_since) if self._hold_since is not None else 0.0)
        return max(0.0, t - self._t_start - held)

    @property
    def episode_over(self) -> bool:
        """True once the last attempt's outcome means no further attempt in this episode."""
        rec = self.current
        if rec is None or not rec.outcome:
            return False
        return not self.wants_retry

    @property
    def wants_retry(self) -> bool:
        rec = self.current
        if rec is None or not rec.outcome:
            return False
        if rec.outcome == "success":
            return False
        if rec.outcome == "abort" and rec.labelled:
            return False   # a human abort stops the episode
        return bool(self.config.retries) and self.attempt < int(self.config.max_attempts)

    # ---------------------------------------------------------------- lifecycle
    def start_episode(self, t: float, episode_id: str | None = None) -> list[Event]:
        """IDLE -> RUNNING: first attempt of a new episode (START)."""
        self._require("start_episode", IDLE)
        if episode_id is not None:
            self.episode_id = episode_id
        self.attempt = 0
        self.attempts = []
        return self._start_attempt(t)

    def _start_attempt(self, t: float) -> list[Event]:
        self.attempt += 1
        self.last_progress = math.nan
        self.holding = False
        self._reset_attempt_tracking(t)
        self.attempts.append(AttemptRecord(self.attempt, float(t)))
        self.state = RUNNING
        return [self._emit("START", t, f"attempt {self.attempt} of {self.config.max_attempts}")]

    def _end_attempt(self, t: float, kind: str, outcome: str, reason: str,
                     labelled: bool = False) -> list[Event]:
        rec = self.current
        assert rec is not None
        if self._hold_since is not None:
            self._held_s += t - self._hold_since
            self._hold_since = None
        rec.t_end, rec.outcome, rec.kind, rec.reason = float(t), outcome, kind, reason
        rec.labelled, rec.held_s = labelled, self._held_s
        self.holding = False
        self.state = SUCCEEDED if outcome == "success" else FAILED
        out = [self._emit(kind, t, reason, outcome if kind == "HUMAN_LABEL" else "")]
        out.append(self._emit("END", t, f"{kind.lower()}: {reason}", outcome))
        return out

    def begin_reset(self, t: float) -> list[Event]:
        """SUCCEEDED / FAILED -> RESETTING (the caller now resets the robot / scene)."""
        self._require("begin_reset", SUCCEEDED, FAILED)
        self.state = RESETTING
        self._reset_began = float(t)
        return []

    def reset_done(self, t: float, ok: bool, reason: str = "") -> list[Event]:
        """RESETTING -> RUNNING (RETRY + START) when a retry is wanted, IDLE when the episode is
        over; a failed or missing reset ends the episode with ABORT and the reason."""
        self._require("reset_done", RESETTING)
        if not ok:
            self.state = IDLE
            rec = self.current
            if rec is not None:
                rec.reason = (rec.reason + "; " if rec.reason else "") + f"reset failed: {reason}"
            return [self._emit("ABORT", t, f"reset failed: {reason or 'no reason given'}", "abort")]
        if not self.wants_retry:
            self.state = IDLE
            return []
        prev = self.current
        ev = self._emit("RETRY", t, f"after {prev.kind.lower()} ({prev.reason}); attempt "
                                    f"{self.attempt + 1} of {self.config.max_attempts}")
        return [ev] + self._start_attempt(t)

    # ----------------------------------------------------------------- signals
    def update(self, t: float, progress: float, success: float = math.nan) -> list[Event]:
        """A new valid progress value at time t, with the success classifier's probability for
        the same frame (NaN: none). Invalid values (progress NaN, inf or outside [0, 1]; a
        probability that is not NaN and not in [0, 1]) raise ValueError: the caller filters and
        counts them."""
        p = float(progress)
        if not math.isfinite(p) or p < 0.0 or p > 1.0:
            raise ValueError(f"progress {progress!r} is not a number in [0, 1]")
        ps = float(success)
        if not math.isnan(ps) and not (0.0 <= ps <= 1.0):
            raise ValueError(f"success probability {success!r} is not NaN or a number in [0, 1]")
        if self.state != RUNNING:
            return []
        self.last_progress = p
        if self.holding:
            return []
        cfg = self.config
        self._samples.append((float(t), p))
        horizon = max(cfg.stall_window_s, cfg.regression_window_s)
        while self._samples and self._samples[0][0] < t - horizon - 1e-9:
            self._samples.popleft()

        # success, with dwell and hysteresis: on progress, on the success probability, or either
        if cfg.success_source in ("progress", "either"):
            self._dwell_since = _dwell(self._dwell_since, t, p, cfg.success_threshold, cfg.success_hysteresis)
            if self._dwell_since is not None and t - self._dwell_since >= cfg.success_dwell_s - 1e-9:
                return self._end_attempt(
                    t, "SUCCESS", "success",
                    f"progress >= {cfg.success_threshold:g} (hysteresis {cfg.success_hysteresis:g}) for "
                    f"{t - self._dwell_since:.2f} s (now {_fmt(p)})")
        if cfg.success_source in ("classifier", "either") and not math.isnan(ps):
            self._pdwell_since = _dwell(self._pdwell_since, t, ps, cfg.success_prob_threshold,
                                        cfg.success_hysteresis)
            if self._pdwell_since is not None and t - self._pdwell_since >= cfg.success_prob_dwell_s - 1e-9:
                return self._end_attempt(
                    t, "SUCCESS", "success",
                    f"success probability >= {cfg.success_prob_threshold:g} (hysteresis "
                    f"{cfg.success_hysteresis:g}) for {t - self._pdwell_since:.2f} s (now {_fmt(ps)}; "
                    f"progress {_fmt(p)})")

        # regression: drop below the maximum of the recent window
        reg = [q for (s, q) in self._samples if s >= t - cfg.regression_window_s - 1e-9]
        peak = max(reg)
        if peak - p > cfg.regression_drop:
            return self._end_attempt(
                t, "REGRESSION", "failure",
                f"progress fell {peak - p:.3f} (from {_fmt(peak)} to {_fmt(p)}) within "
                f"{cfg.regression_window_s:g} s (limit {cfg.regression_drop:g})")

        # stall: too little gain over a whole window (not while dwelling near success)
        if (cfg.stall_min_gain > 0 and self._dwell_since is None and self._pdwell_since is None
                and t - self._t_window_origin >= cfg.stall_window_s - 1e-9):
            win = [(s, q) for (s, q) in self._samples if s >= t - cfg.stall_window_s - 1e-9]
            if win and win[-1][0] - win[0][0] >= 0.8 * cfg.stall_window_s:
                first = win[0][1]
                gain = max(q for _, q in win) - first
                if gain < cfg.stall_min_gain:
                    return self._end_attempt(
                        t, "STALL", "failure",
                        f"progress gained {gain:.3f} in {cfg.stall_window_s:g} s (needs "
                        f">= {cfg.stall_min_gain:g}; at {_fmt(p)})")
        return self.tick(t)

    def tick(self, t: float) -> list[Event]:
        """Time passes without a new value: only the timeout can fire."""
        if self.state != RUNNING:
            return []
        if self.elapsed(t) >= self.config.timeout_s:
            return self._end_attempt(
                t, "TIMEOUT", "failure",
                f"attempt ran {self.elapsed(t):.1f} s without success (timeout {self.config.timeout_s:g} s)")
        return []

    def hold(self, t: float, reason: str) -> list[Event]:
        """Stop deciding (the caller holds the robot): values are stale."""
        if self.state != RUNNING or self.holding:
            return []
        self.holding = True
        self._hold_since = float(t)
        return [self._emit("HOLD", t, reason)]

    def resume(self, t: float, reason: str) -> list[Event]:
        if self.state != RUNNING or not self.holding:
            return []
        self.holding = False
        if self._hold_since is not None:
            self._held_s += t - self._hold_since
            self._hold_since = None
        # the gap is not progress information: restart the windows and the dwell
        self._samples.clear()
        self._dwell_since = None
        self._pdwell_since = None
        self._t_window_origin = float(t)
        return [self._emit("RESUME", t, reason)]

    def abort(self, t: float, reason: str) -> list[Event]:
        """End the running attempt as aborted (e.g. the robot reported a fault)."""
        self._require("abort", RUNNING)
        return self._end_attempt(t, "ABORT", "abort", reason)

    def human_label(self, t: float, label: str, reason: str = "") -> list[Event]:
        """A human's verdict on the current attempt; wins over the model.

        While RUNNING it ends the attempt (HUMAN_LABEL + END). After the attempt ended (and
        before the next one started) it overrides the recorded outcome (HUMAN_LABEL only).
        In IDLE with no attempt yet, or with an unknown label, it raises EpisodeError."""
        label = str(label).strip().lower()
        if label not in OUTCOMES:
            raise EpisodeError(f"human label {label!r}; expected one of {', '.join(OUTCOMES)}")
        why = reason.strip() or "human label"
        if self.state == RUNNING:
            return self._end_attempt(t, "HUMAN_LABEL", label, why, labelled=True)
        rec = self.current
        if rec is None or not rec.outcome:
            raise EpisodeError(f"human label {label!r} in state {self.state} with no attempt to label")
        before = rec.outcome
        rec.outcome, rec.labelled = label, True
        rec.reason = f"{why} (model said {before})"
        if self.state in (SUCCEEDED, FAILED):
            self.state = SUCCEEDED if label == "success" else FAILED
        return [self._emit("HUMAN_LABEL", t, f"{why}; overrides {before}", label)]
