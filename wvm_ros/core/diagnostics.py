"""ROS-free statistics for node diagnostics: event rates, latency, counters, a status level.

A node keeps one `NodeStats`, feeds it (`tick("input")`, `latency(0.012)`,
`count("rejected")`, `error("...")`) and, once a second, turns `stats.report()` into a
`diagnostic_msgs/DiagnosticStatus` (see `wvm_ros.ros.diagnostics`).

Levels follow diagnostic_msgs: OK = 0, WARN = 1, ERROR = 2, STALE = 3.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}


class RateMeter:
    """Events per second over a sliding window of `window_s` seconds."""

    def __init__(self, window_s: float = 5.0, clock=time.monotonic):
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._clock = clock
        self._t: collections.deque[float] = collections.deque()
        self._last: float | None = None  # time of the newest event, kept when the window empties
        self.total = 0

    def tick(self, n: int = 1) -> None:
        now = self._clock()
        for _ in range(n):
            self._t.append(now)
        self.total += n
        if n > 0:
            self._last = now
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._t and self._t[0] < now - self.window_s:
            self._t.popleft()

    def rate(self) -> float:
        now = self._clock()
        self._trim(now)
        if len(self._t) < 2:
            return 0.0
        span = now - self._t[0]
        return (len(self._t) - 1) / span if span > 0 else 0.0

    def last_age(self) -> float | None:
        """Seconds since the last event (also once it has left the rate window), None if none yet."""
        return (self._clock() - self._last) if self._last is not None else None


class LatencyStats:
    """Mean / max / last of recent latencies (seconds) over the last `n` samples."""

    def __init__(self, n: int = 100):
        self._v: collections.deque[float] = collections.deque(maxlen=n)

    def add(self, seconds: float) -> None:
        self._v.append(float(seconds))

    @property
    def count(self) -> int:
        return len(self._v)

    def summary(self) -> dict[str, float]:
        if not self._v:
            return {"last": float("nan"), "mean": float("nan"), "max": float("nan"), "p95": float("nan")}
        v = sorted(self._v)
        return {"last": self._v[-1], "mean": sum(v) / len(v), "max": v[-1],
                "p95": v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]}


@dataclass
class Report:
    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)


class NodeStats:
    """Thread-safe rates, latency and counters of a node, with the rules for its level.

    `expect_input_within_s`: no input for that long -> WARN ("no input for X s": X is the time
    since the last input; "no input for X s (none since start)" when there never was any). An
    `error()` in the last `error_hold_s` seconds -> ERROR with that message.
    """

    def __init__(self, rates=("input", "output"), window_s: float = 5.0,
                 expect_input_within_s: float | None = 5.0, error_hold_s: float = 5.0,
                 clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self.rates = {name: RateMeter(window_s, clock) for name in rates}
        self.latency = LatencyStats()
        self.counters: collections.Counter[str] = collections.Counter()
        self.expect_input_within_s = expect_input_within_s
        self.error_hold_s = error_hold_s
        self._last_error: tuple[float, str] | None = None
        self._warn: str | None = None
        self._started = clock()
        self.extra: dict[str, str] = {}

    def tick(self, name: str, n: int = 1) -> None:
        with self._lock:
            if name not in self.rates:
                self.rates[name] = RateMeter(next(iter(self.rates.values())).window_s if self.rates else 5.0,
                                             self._clock)
            self.rates[name].tick(n)

    def add_latency(self, seconds: float) -> None:
        with self._lock:
            self.latency.add(seconds)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def error(self, message: str) -> None:
        with self._lock:
            self._last_error = (self._clock(), message)
            self.counters["errors"] += 1

    def warn(self, message: str | None) -> None:
        """A standing warning (None clears it)."""
        with self._lock:
            self._warn = message

    def report(self) -> Report:
        with self._lock:
            now = self._clock()
            values: dict[str, str] = {}
            for name, meter in self.rates.items():
                values[f"{name} rate (Hz)"] = f"{meter.rate():.2f}"
                values[f"{name} total"] = str(meter.total)
            lat = self.latency.summary()
            for k, v in lat.items():
                values[f"latency {k} (ms)"] = "nan" if v != v else f"{v * 1000:.1f}"
            for k, v in sorted(self.counters.items()):
                values[k] = str(v)
            values.update(self.extra)
            level, msg = OK, "ok"
            if self._warn:
                level, msg = WARN, self._warn
            inp = self.rates.get("input")
            if self.expect_input_within_s is not None and inp is not None:
                age = inp.last_age()
                if age is not None:
                    if age > self.expect_input_within_s:
                        level, msg = max(level, WARN), "no input for %.1f s" % age
                else:
                    waited = now - self._started
                    if waited > self.expect_input_within_s:
                        level, msg = max(level, WARN), "no input for %.1f s (none since start)" % waited
            if self._last_error and now - self._last_error[0] <= self.error_hold_s:
                level, msg = ERROR, self._last_error[1]
            return Report(level, msg, values)


class RateLimitedLog:
    """Say a message at most once per `period_s` per key; count what was suppressed."""

    def __init__(self, period_s: float = 5.0, clock=time.monotonic):
        self.period_s = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self.suppressed: collections.Counter[str] = collections.Counter()

    def should_log(self, key: str) -> bool:
        now = self._clock()
        t = self._last.get(key)
        if t is None or now - t >= self.period_s:
            self._last[key] = now
            return True
        self.suppressed[key] += 1
        return False
