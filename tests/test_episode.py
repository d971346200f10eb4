"""Every transition of the episode state machine (wvm_ros.core.episode), ROS-free."""
from __future__ import annotations

import math

import pytest

from wvm_ros.core.episode import (FAILED, IDLE, RESETTING, RUNNING, SUCCEEDED, EpisodeConfig, EpisodeError,
                                  EpisodeStateMachine)


def cfg(**kw) -> EpisodeConfig:
    base = dict(success_threshold=0.9, success_hysteresis=0.05, success_dwell_s=0.5, stall_window_s=4.0,
                stall_min_gain=0.05, regression_window_s=2.0, regression_drop=0.3, timeout_s=30.0,
                max_attempts=3, retries=True, success_prob_threshold=0.9)
    base.update(kw)
    return EpisodeConfig(**base)


def kinds(events):
    return [e.kind for e in events]


def feed(sm, t0, t1, fn, dt=0.1):
    """Feed progress fn(t) from t0 to t1 (inclusive-ish); return all events."""
    out = []
    n = int(round((t1 - t0) / dt))
    for i in range(n + 1):
        t = t0 + i * dt
        out += sm.update(t, fn(t))
        if sm.state != RUNNING:
            break
    return out


def running(**kw) -> EpisodeStateMachine:
    sm = EpisodeStateMachine(cfg(**kw), "ep")
    ev = sm.start_episode(0.0)
    assert kinds(ev) == ["START"] and sm.state == RUNNING and sm.attempt == 1
    return sm


def test_idle_to_running_emits_start_with_attempt():
    sm = EpisodeStateMachine(cfg(), "ep-a")
    assert sm.state == IDLE
    ev = sm.start_episode(1.0, "ep-b")
    assert sm.state == RUNNING
    assert ev[0].kind == "START" and ev[0].episode_id == "ep-b" and ev[0].attempt == 1
    assert "attempt 1 of 3" in ev[0].reason


def test_success_after_dwell():
    sm = running()
    ev = feed(sm, 0.0, 10.0, lambda t: min(1.0, 0.2 * t))   # reaches 0.9 at t = 4.5
    assert kinds(ev) == ["SUCCESS", "END"]
    assert sm.state == SUCCEEDED
    assert ev[0].t == pytest.approx(5.0, abs=0.11)          # 4.5 + dwell 0.5
    assert ev[1].outcome == "success" and "progress >= 0.9" in ev[0].reason
    assert sm.current.outcome == "success"


def test_success_dwell_survives_dip_within_hysteresis():
    sm = running()
    seq = {0.0: 0.5, 0.1: 0.91, 0.2: 0.87, 0.3: 0.92, 0.4: 0.88, 0.5: 0.93, 0.6: 0.95}
    events = []
    for t, p in seq.items():
        events += sm.update(t, p)
    assert kinds(events) == ["SUCCESS", "END"]
    assert events[0].t == pytest.approx(0.6)                # dwell began at 0.1


def test_success_dwell_restarts_below_hysteresis():
    sm = running()
    events = []
    for t, p in [(0.0, 0.91), (0.3, 0.84), (0.4, 0.92), (0.8, 0.95)]:
        events += sm.update(t, p)
    assert events == [] and sm.state == RUNNING             # the 0.84 dip restarted the dwell
    events += sm.update(0.9, 0.95)
    assert kinds(events) == ["SUCCESS", "END"]


def test_stall():
    sm = running()
    ev = feed(sm, 0.0, 20.0, lambda t: min(0.3, 0.1 * t))   # flat at 0.3 from t = 3
    assert kinds(ev) == ["STALL", "END"]
    assert sm.state == FAILED and ev[1].outcome == "failure"
    assert 6.4 <= ev[0].t <= 7.1                           # gain < 0.05 over the last 4 s
    assert "gained" in ev[0].reason


def test_no_stall_before_a_whole_window():
    sm = running()
    assert feed(sm, 0.0, 3.5, lambda t: 0.1) == []


def test_no_stall_while_dwelling_near_success():
    sm = running(success_dwell_s=100.0)
    assert feed(sm, 0.0, 10.0, lambda t: 0.92) == []       # dwell running: no stall, no success yet


def test_regression():
    sm = running()
    ev = feed(sm, 0.0, 10.0, lambda t: 0.6 if t < 3.0 else 0.2)
    assert kinds(ev) == ["REGRESSION", "END"]
    assert sm.state == FAILED and ev[0].t == pytest.approx(3.0)
    assert "fell 0.400" in ev[0].reason


def test_slow_decline_is_not_a_regression_but_a_stall():
    sm = running()
    ev = feed(sm, 0.0, 20.0, lambda t: max(0.0, 0.6 - 0.05 * t))  # 0.1 per 2 s < 0.3
    assert kinds(ev) == ["STALL", "END"]


def test_timeout_by_tick_and_hold_time_not_counted():
    sm = running(timeout_s=5.0, stall_min_gain=0.0)
    assert sm.tick(4.9) == []
    sm.update(1.0, 0.2)
    assert kinds(sm.hold(2.0, "stale")) == ["HOLD"]
    assert sm.tick(6.0) == []                               # 4 s of holding do not count
    assert kinds(sm.resume(6.0, "back")) == ["RESUME"]
    assert sm.tick(8.9) == []                               # active 2 + 2.9 = 4.9 s
    ev = sm.tick(9.1)
    assert kinds(ev) == ["TIMEOUT", "END"] and sm.state == FAILED
    assert "timeout 5 s" in ev[0].reason


def test_hold_blocks_decisions_and_resume_restarts_windows():
    sm = running()
    feed(sm, 0.0, 2.0, lambda t: 0.1 * t)
    assert kinds(sm.hold(2.0, "no values")) == ["HOLD"] and sm.holding
    assert sm.hold(2.1, "again") == []                      # idempotent
    assert sm.update(3.0, 0.95) == [] and sm.update(5.0, 0.95) == []   # no success while holding
    assert kinds(sm.resume(8.0, "values back")) == ["RESUME"] and not sm.holding
    assert sm.resume(8.1, "again") == []
    # the stall window restarts at resume: flat values for 3.9 s do not stall
    assert feed(sm, 8.0, 11.9, lambda t: 0.2) == []
    assert kinds(feed(sm, 12.0, 14.0, lambda t: 0.2)) == ["STALL", "END"]


def test_abort_from_running():
    sm = running()
    ev = sm.abort(1.0, "robot fault")
    assert kinds(ev) == ["ABORT", "END"] and ev[1].outcome == "abort" and sm.state == FAILED


def test_human_label_wins_while_running():
    sm = running()
    sm.update(0.5, 0.1)
    ev = sm.human_label(1.0, "success", "operator saw it")
    assert kinds(ev) == ["HUMAN_LABEL", "END"]
    assert ev[0].outcome == "success" and ev[1].outcome == "success" and sm.state == SUCCEEDED
    assert sm.current.labelled


def test_human_label_overrides_model_after_end():
    sm = running()
    feed(sm, 0.0, 10.0, lambda t: min(1.0, 0.5 * t))
    assert sm.state == SUCCEEDED
    ev = sm.human_label(11.0, "failure", "block not in place")
    assert kinds(ev) == ["HUMAN_LABEL"] and ev[0].outcome == "failure"
    assert sm.state == FAILED and sm.current.outcome == "failure" and "model said success" in sm.current.reason
    assert sm.wants_retry                                   # the label changed the retry decision


def test_human_label_rejected_without_attempt_or_bad_label():
    sm = EpisodeStateMachine(cfg())
    with pytest.raises(EpisodeError, match="no attempt"):
        sm.human_label(0.0, "success")
    sm.start_episode(0.0)
    with pytest.raises(EpisodeError, match="expected one of"):
        sm.human_label(0.1, "maybe")


def test_failure_reset_retry_start():
    sm = running()
    feed(sm, 0.0, 10.0, lambda t: 0.6 if t < 3 else 0.1)
    assert sm.state == FAILED and sm.wants_retry
    assert sm.begin_reset(3.1) == [] and sm.state == RESETTING
    ev = sm.reset_done(3.5, True)
    assert kinds(ev) == ["RETRY", "START"] and sm.state == RUNNING and sm.attempt == 2
    assert ev[1].attempt == 2 and "after regression" in ev[0].reason
    assert math.isnan(sm.last_progress)


def test_success_reset_goes_idle():
    sm = running()
    feed(sm, 0.0, 10.0, lambda t: 0.95)
    sm.begin_reset(1.0)
    assert sm.reset_done(1.5, True) == [] and sm.state == IDLE and sm.episode_over


def test_max_attempts_then_idle():
    sm = running(max_attempts=2)
    for attempt in (1, 2):
        assert sm.attempt == attempt
        sm.abort(attempt * 10.0, "x")
        sm.begin_reset(attempt * 10.0)
        ev = sm.reset_done(attempt * 10.0 + 1, True)
        if attempt == 1:
            assert kinds(ev) == ["RETRY", "START"]
    assert ev == [] and sm.state == IDLE and [a.outcome for a in sm.attempts] == ["abort", "abort"]


def test_retries_off_means_one_attempt():
    sm = running(retries=False)
    sm.abort(1.0, "x")
    sm.begin_reset(1.0)
    assert sm.reset_done(2.0, True) == [] and sm.state == IDLE


def test_human_abort_stops_the_episode():
    sm = running()
    sm.human_label(1.0, "abort", "unsafe")
    assert not sm.wants_retry
    sm.begin_reset(1.0)
    assert sm.reset_done(2.0, True) == [] and sm.state == IDLE


def test_reset_failure_aborts_with_reason():
    sm = running()
    sm.abort(1.0, "x")
    sm.begin_reset(1.0)
    ev = sm.reset_done(6.0, False, "service /robot/reset not available")
    assert kinds(ev) == ["ABORT"] and ev[0].outcome == "abort" and sm.state == IDLE
    assert "/robot/reset" in ev[0].reason


def test_illegal_calls_name_state():
    sm = EpisodeStateMachine(cfg())
    with pytest.raises(EpisodeError, match="state IDLE"):
        sm.begin_reset(0.0)
    with pytest.raises(EpisodeError, match="expected state RESETTING"):
        sm.reset_done(0.0, True)
    with pytest.raises(EpisodeError):
        sm.abort(0.0, "x")
    sm.start_episode(0.0)
    with pytest.raises(EpisodeError, match="expected state IDLE"):
        sm.start_episode(0.0)
    # in non-running states updates / ticks do nothing
    assert EpisodeStateMachine(cfg()).update(0.0, 0.5) == []
    assert EpisodeStateMachine(cfg()).tick(100.0) == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1, 1.5])
def test_invalid_progress_raises(bad):
    sm = running()
    with pytest.raises(ValueError, match="not a number in"):
        sm.update(0.1, bad)


@pytest.mark.parametrize("field,value", [("success_threshold", 1.5), ("success_hysteresis", 0.95),
                                         ("max_attempts", 0), ("timeout_s", 0.0), ("stall_window_s", -1)])
def test_bad_config_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        cfg(**{field: value})
    with pytest.raises(ValueError, match="unknown keys"):
        EpisodeConfig.from_mapping({"nope": 1})


def test_every_event_has_reason_and_ids():
    sm = running()
    feed(sm, 0.0, 10.0, lambda t: 0.6 if t < 3 else 0.1)
    sm.begin_reset(4.0)
    sm.reset_done(4.5, True)
    sm.hold(5.0, "stale")
    sm.resume(6.0, "back")
    feed(sm, 6.0, 20.0, lambda t: 0.95)
    for e in sm.events:
        assert e.reason and e.episode_id == "ep" and e.attempt >= 1
    assert kinds(sm.events) == ["START", "REGRESSION", "END", "RETRY", "START", "HOLD", "RESUME", "SUCCESS", "END"]


# ------------------------------------------------------------ success classifier rule
def feed2(sm, t0, t1, fp, fs, dt=0.1):
    """Feed progress fp(t) and success probability fs(t)."""
    out = []
    for i in range(int(round((t1 - t0) / dt)) + 1):
        t = t0 + i * dt
        out += sm.update(t, fp(t), fs(t))
        if sm.state != RUNNING:
            break
    return out


def test_classifier_source_ends_on_probability_dwell_not_on_progress():
    sm = running(success_source="classifier", success_prob_threshold=0.9, success_prob_dwell_s=0.3)
    # progress sits at 0.95 (the progress rule would fire at 0.5 s); the probability rises at t = 2
    ev = feed2(sm, 0.0, 10.0, lambda t: 0.95, lambda t: 0.99 if t >= 2.0 - 1e-9 else 0.1)
    assert kinds(ev) == ["SUCCESS", "END"]
    assert ev[0].t == pytest.approx(2.3, abs=1e-6)
    assert "success probability >= 0.9" in ev[0].reason and "progress 0.950" in ev[0].reason


def test_classifier_probability_hysteresis_and_reset():
    sm = running(success_source="classifier", success_prob_threshold=0.9, success_prob_dwell_s=0.5,
                 success_hysteresis=0.05, stall_min_gain=0.0)
    # 0.87 (within hysteresis) keeps the dwell; 0.5 restarts it
    seq = {0.0: 0.95, 0.1: 0.95, 0.2: 0.87, 0.3: 0.95, 0.4: 0.5, 0.5: 0.95, 0.6: 0.95, 0.7: 0.95, 0.8: 0.95,
           0.9: 0.95, 1.0: 0.95}
    ev = []
    for t, p in seq.items():
        ev += sm.update(t, 0.2, p)
    assert kinds(ev) == ["SUCCESS", "END"] and ev[0].t == pytest.approx(1.0)
    sm2 = running(success_source="classifier", success_prob_dwell_s=0.2, stall_min_gain=0.0)
    for t, p in ((0.0, 0.95), (0.1, 0.87), (0.2, 0.92)):
        ev2 = sm2.update(t, 0.2, p)
    assert kinds(ev2) == ["SUCCESS", "END"]   # 0.87 is within the 0.05 hysteresis of 0.9


def test_nan_probability_neither_starts_nor_breaks_the_dwell():
    sm = running(success_source="classifier", success_prob_dwell_s=0.3, stall_min_gain=0.0)
    assert sm.update(0.0, 0.5, math.nan) == []
    assert sm.update(0.1, 0.5, 0.95) == []
    assert sm.update(0.2, 0.5, math.nan) == []
    assert kinds(sm.update(0.4, 0.5, 0.95)) == ["SUCCESS", "END"]
    # classifier source without any probability: the progress rule does not end the attempt
    sm = running(success_source="classifier", success_dwell_s=0.0, stall_min_gain=0.0)
    assert feed2(sm, 0.0, 3.0, lambda t: 1.0, lambda t: math.nan) == [] and sm.state == RUNNING


def test_either_source_fires_on_whichever_comes_first():
    sm = running(success_source="either", success_dwell_s=0.5, success_prob_dwell_s=1.0)
    ev = feed2(sm, 0.0, 5.0, lambda t: 0.95, lambda t: 0.99)          # progress rule first (0.5 s)
    assert ev[0].t == pytest.approx(0.5) and "progress >=" in ev[0].reason
    sm = running(success_source="either", success_dwell_s=2.0, success_prob_dwell_s=0.2)
    ev = feed2(sm, 0.0, 5.0, lambda t: 0.95, lambda t: 0.99)          # classifier first (0.2 s)
    assert ev[0].t == pytest.approx(0.2) and "success probability" in ev[0].reason
    sm = running(success_source="either", success_dwell_s=0.5)
    ev = feed2(sm, 0.0, 5.0, lambda t: 0.95, lambda t: math.nan)      # no classifier: progress rule
    assert kinds(ev) == ["SUCCESS", "END"] and ev[0].t == pytest.approx(0.5)


def test_progress_source_ignores_the_probability():
    sm = running(success_source="progress", stall_min_gain=0.0)
    assert feed2(sm, 0.0, 3.0, lambda t: 0.3, lambda t: 1.0) == [] and sm.state == RUNNING


def test_probability_dwell_suppresses_stall_and_invalid_probability_raises():
    # the probability is high (dwell begun, 2 s needed) while progress is flat: no stall decision
    sm = running(success_source="classifier", success_prob_dwell_s=2.0, stall_window_s=1.0, stall_min_gain=0.05)
    ev = feed2(sm, 0.0, 1.5, lambda t: 0.6, lambda t: 0.95)
    assert ev == [] and sm.state == RUNNING
    for bad in (1.5, -0.1, math.inf):
        with pytest.raises(ValueError, match="success probability"):
            sm.update(2.0, 0.6, bad)


def test_success_source_config_validation():
    with pytest.raises(ValueError, match="success_source"):
        cfg(success_source="vlm")
    with pytest.raises(ValueError, match="success_prob_threshold"):
        cfg(success_prob_threshold=0.0)
    with pytest.raises(ValueError, match="success_prob_dwell_s"):
        cfg(success_prob_dwell_s=-1.0)
