"""ROS-free node statistics (wvm_ros.core.diagnostics)."""
import pytest

from wvm_ros.core.diagnostics import ERROR, OK, WARN, LatencyStats, NodeStats, RateLimitedLog, RateMeter


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_rate_meter_measures_events_per_second_over_window():
    c = Clock()
    m = RateMeter(window_s=2.0, clock=c)
    for _ in range(21):
        m.tick()
        c.t += 0.1
    assert m.rate() == pytest.approx(10.0, rel=0.1)
    c.t += 5.0
    assert m.rate() == 0.0 and m.total == 21
    with pytest.raises(ValueError):
        RateMeter(window_s=0)


def test_latency_summary():
    s = LatencyStats()
    assert s.summary()["mean"] != s.summary()["mean"]  # nan when empty
    for v in (0.01, 0.02, 0.03):
        s.add(v)
    out = s.summary()
    assert out["mean"] == pytest.approx(0.02) and out["max"] == 0.03 and out["last"] == 0.03


def test_node_stats_levels_and_values():
    c = Clock()
    st = NodeStats(expect_input_within_s=1.0, error_hold_s=2.0, clock=c)
    assert st.report().level == OK
    c.t += 1.5
    r = st.report()
    assert r.level == WARN and "no input" in r.message
    st.tick("input"); st.tick("output"); st.count("rejected", 3); st.add_latency(0.05)
    r = st.report()
    assert r.level == OK
    assert r.values["rejected"] == "3" and r.values["input total"] == "1"
    assert r.values["latency mean (ms)"] == "50.0"
    st.error("inference failed: boom")
    r = st.report()
    assert r.level == ERROR and "boom" in r.message and r.values["errors"] == "1"
    st.tick("input")
    c.t += 0.5
    st.tick("input")
    c.t += 2.0
    st.tick("input")
    assert st.report().level == OK  # error older than error_hold_s


def test_rate_limited_log():
    c = Clock()
    log = RateLimitedLog(period_s=5.0, clock=c)
    assert log.should_log("a")
    assert not log.should_log("a")
    assert log.should_log("b")
    c.t += 5.0
    assert log.should_log("a")
    assert log.suppressed["a"] == 1


def test_no_input_reports_time_since_the_last_input_not_since_start():
    """Once the last input has left the rate window, "no input for X s" still measures X from
    that input (a node that ran for 300 s and lost its input 5.5 s ago says 5.5 s)."""
    c = Clock()
    st = NodeStats(rates=("input",), window_s=5.0, expect_input_within_s=5.0, clock=c)
    t_start = c.t
    for i in range(3000):                      # 10 Hz input for 300 s
        c.t = t_start + i * 0.1
        st.tick("input")
    last = c.t
    c.t = last + 5.5
    r = st.report()
    assert r.level == WARN and r.message == "no input for 5.5 s", r.message
    assert r.values["input rate (Hz)"] == "0.00" and r.values["input total"] == "3000"
    c.t = last + 60.0
    assert st.report().message == "no input for 60.0 s"
    st.tick("input")
    assert st.report().level == OK


def test_no_input_ever_reports_time_since_start():
    c = Clock()
    st = NodeStats(rates=("input",), expect_input_within_s=2.0, clock=c)
    c.t += 1.0
    assert st.report().level == OK
    c.t += 2.0
    r = st.report()
    assert r.level == WARN and r.message == "no input for 3.0 s (none since start)", r.message


def test_rate_meter_last_age_outlives_the_window():
    c = Clock()
    m = RateMeter(window_s=1.0, clock=c)
    assert m.last_age() is None
    m.tick()
    c.t += 10.0
    assert m.rate() == 0.0 and m.last_age() == pytest.approx(10.0)
