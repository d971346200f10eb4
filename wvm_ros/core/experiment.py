"""`wvm experiment retries`: success detection and retries on the PushT simulator. ROS-free.

The loop of the live graph, in one process (deterministic, no DDS): the simulator renders
the camera frame, the WVM runs through the same `StreamingValueEstimator` the value node
uses, the same `EpisodeStateMachine` the policy node uses decides success / stall /
regression / timeout, and the scripted policy acts. Every episode (one seed) is run twice:
with retries (up to `max_attempts` attempts, a new scene after each reset, as the sim
robot's reset service gives) and without (one attempt). Failures are injected per attempt,
drawn from the episode seed and the attempt number (so both runs of a seed see the same
first attempt):

* stuck: from a random step on, the agent stays away from the block (a failure);
* random: random pushes for a while (the controller recovers afterwards, or not);
* hesitation: the agent pauses (not a failure: it tests for false stall decisions).

Ground truth comes from the simulator's coverage (`PushTSim.success`, gym-pusht's 0.95);
it is only used for scoring, never for a decision.

Per attempt: ground-truth success reached and when; the state machine's decision and
when; detection delay = decision time - first ground-truth success time; a *false success*
is a SUCCESS decision before the simulator reached success in that attempt; a *missed
success* is an attempt that reached success without a SUCCESS decision. Per episode:
success = the scene is in ground-truth success when the system stops (after its last
decision, before any reset), and time to success (active time of the attempts before the
last plus the time into the last one until ground-truth success; resets count `reset_time_s`).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from wvm_ros.core.episode import RUNNING, EpisodeConfig, EpisodeStateMachine

DEFAULT_TASK = "Push the T-shaped block onto the T-shaped target."


@dataclass
class InjectionMix:
    """Per-attempt probabilities of the injected behaviours (at most one per attempt)."""

    p_stuck: float = 0.3
    p_random: float = 0.15
    p_hesitation: float = 0.15
    stuck_start_s: tuple[float, float] = (0.5, 4.0)
    random_start_s: tuple[float, float] = (1.0, 4.0)
    random_duration_s: tuple[float, float] = (3.0, 8.0)
    hesitation_start_s: tuple[float, float] = (1.0, 5.0)
    hesitation_duration_s: tuple[float, float] = (1.5, 3.0)

    def __post_init__(self) -> None:
        total = self.p_stuck + self.p_random + self.p_hesitation
        for name in ("p_stuck", "p_random", "p_hesitation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"injection mix: {name}={getattr(self, name)!r}, expected a probability in [0, 1]")
        if total > 1.0 + 1e-9:
            raise ValueError(f"injection mix: p_stuck + p_random + p_hesitation = {total:g}, expected <= 1")

    def draw(self, episode_seed: int, attempt: int, control_hz: float) -> list[dict]:
        rng = np.random.default_rng([int(episode_seed), int(attempt), 4242])
        u = rng.random()
        steps = lambda lo_hi: int(round(rng.uniform(*lo_hi) * control_hz))  # noqa: E731
        if u < self.p_stuck:
            return [{"kind": "stuck", "start": steps(self.stuck_start_s), "duration": 0}]
        u -= self.p_stuck
        if u < self.p_random:
            return [{"kind": "random", "start": steps(self.random_start_s),
                     "duration": max(1, steps(self.random_duration_s))}]
        u -= self.p_random
        if u < self.p_hesitation:
            return [{"kind": "hesitation", "start": steps(self.hesitation_start_s),
                     "duration": max(1, steps(self.hesitation_duration_s))}]
        return []


@dataclass
class ExperimentConfig:
    episodes: int = 30
    seed: int = 0
    max_attempts: int = 3
    difficulty: float = 0.5
    reset_time_s: float = 0.0
    task: str = DEFAULT_TASK
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    injections: InjectionMix = field(default_factory=InjectionMix)
    keep_traces: int = 6          # attempts whose full traces go into the plot
    estimate_fps: float | None = None  # dense streaming (StreamingValueEstimator); None: one per sampled frame
    reuse_first_attempt: bool = True   # without retries = the first attempt of the run with retries

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AttemptResult:
    episode_seed: int
    retries: bool
    attempt: int
    scene_seed: int
    injection: str
    outcome: str                  # state machine: success / failure / abort
    decided_by: str               # SUCCESS / STALL / REGRESSION / TIMEOUT
    reason: str
    duration_s: float
    gt_success: bool              # the simulator reached success during the attempt
    t_gt_success: float | None
    t_decision: float
    detection_delay_s: float | None
    false_success: bool
    missed_success: bool
    final_gt_progress: float
    final_pred_progress: float
    estimates: int
    mean_latency_ms: float
    trace: dict | None = None
    gt_success_at_end: bool = False   # the simulator is in success when the attempt ends


def run_attempt(sim, policy_factory: Callable[[list[dict], int], Any], estimator, sm: EpisodeStateMachine,
                episode_seed: int, attempt: int, scene_seed: int, injections: list[dict],
                keep_trace: bool = False) -> AttemptResult:
    """One attempt: the state machine must already be RUNNING for it (START emitted)."""
    import torch

    hz = float(sim.control_hz)
    sample_every = max(1, int(round(hz / float(estimator.estimate_fps))))
    state = sim.reset(seed=scene_seed)
    policy = policy_factory(injections, scene_seed)
    estimator.reset()
    torch.manual_seed(scene_seed)
    t_start = sm.events[-1].t
    t = t_start
    t_gt = None
    last_stamp = None
    pred = psucc = math.nan
    n_est, lat = 0, 0.0
    trace = {"t": [], "gt": [], "pred": [], "success": []} if keep_trace else None
    step = 0
    while sm.state == RUNNING:
        rel = t - t_start
        if sim.success and t_gt is None:
            t_gt = rel
        events = []
        if step % sample_every == 0:     # the camera frames the estimator takes (estimate_fps)
            est = estimator.push(sim.render(), rel)
            # an invalid estimate (e.g. a non-finite model output) is ignored, as the policy node does
            if est is not None and est.stamp_s != last_stamp and getattr(est, "valid", True):
                last_stamp = est.stamp_s
                pred = est.progress
                psucc = est.success
                n_est += 1
                lat += est.latency_s
                events = sm.update(t, est.progress, est.success)
        if not events:
            events = sm.tick(t)
        if trace is not None:
            trace["t"].append(rel)
            trace["gt"].append(sim.progress)
            trace["pred"].append(pred)
            trace["success"].append(psucc)
        if sm.state != RUNNING:
            break
        state = sim.step(policy.act(state)).state
        step += 1
        t = t_start + step / hz
    rec = sm.current
    t_dec = rec.t_end - t_start
    detected = rec.outcome == "success"
    false_success = detected and (t_gt is None or t_gt > t_dec + 1e-9)
    delay = (t_dec - t_gt) if (detected and t_gt is not None and not false_success) else None
    return AttemptResult(
        episode_seed=episode_seed, retries=sm.config.retries, attempt=attempt, scene_seed=scene_seed,
        injection=",".join(i["kind"] for i in injections) or "none", outcome=rec.outcome, decided_by=rec.kind,
        reason=rec.reason, duration_s=t_dec, gt_success=t_gt is not None, t_gt_success=t_gt, t_decision=t_dec,
        detection_delay_s=delay, false_success=false_success, missed_success=(t_gt is not None and not detected),
        final_gt_progress=float(sim.progress), final_pred_progress=float(pred), estimates=n_est,
        mean_latency_ms=1000.0 * lat / max(1, n_est), trace=trace, gt_success_at_end=bool(sim.success))


def run_episode(sim, policy_factory, estimator, cfg: ExperimentConfig, episode_seed: int, retries: bool,
                keep_trace: Callable[[], bool] = lambda: False) -> tuple[dict, list[AttemptResult]]:
    ecfg = EpisodeConfig.from_mapping({**cfg.episode.to_dict(), "retries": retries,
                                       "max_attempts": cfg.max_attempts if retries else 1})
    sm = EpisodeStateMachine(ecfg, f"seed{episode_seed}")
    t = 0.0
    sm.start_episode(t)
    results: list[AttemptResult] = []
    while True:
        attempt = sm.attempt
        injections = cfg.injections.draw(episode_seed, attempt, sim.control_hz)
        scene_seed = episode_seed * 1000 + attempt
        r = run_attempt(sim, policy_factory, estimator, sm, episode_seed, attempt, scene_seed, injections,
                        keep_trace=keep_trace())
        results.append(r)
        t = sm.current.t_end + cfg.reset_time_s
        sm.begin_reset(t)
        sm.reset_done(t, True, "simulator reset")
        if sm.state != RUNNING:
            break
    # the episode succeeded when the scene is in success as the system stops (an early, false
    # SUCCESS leaves the block short of the goal; a missed success that was reset is lost)
    last = results[-1]
    success = last.gt_success_at_end
    time_to_success = None
    if success:
        time_to_success = sum(r.duration_s + cfg.reset_time_s for r in results[:-1]) \
            + (last.t_gt_success if last.t_gt_success is not None else last.t_decision)
    ep = {"episode_seed": episode_seed, "retries": retries, "attempts": len(results),
          "success": success, "time_to_success_s": time_to_success,
          "detected_success": any(r.outcome == "success" for r in results),
          "outcomes": [r.decided_by for r in results]}
    return ep, results


def single_from_first_attempt(ep_with: dict, first: AttemptResult, cfg: "ExperimentConfig"):
    """The episode without retries of a seed, from the first attempt of its run with retries."""
    import dataclasses

    r = dataclasses.replace(first, retries=False, trace=None)
    ok = r.gt_success_at_end
    ep = {"episode_seed": ep_with["episode_seed"], "retries": False, "attempts": 1, "success": ok,
          "time_to_success_s": (r.t_gt_success if r.t_gt_success is not None else r.t_decision) if ok else None,
          "detected_success": r.outcome == "success", "outcomes": [r.decided_by]}
    return ep, [r]


def _median(xs):
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


def summarise(episodes: list[dict], attempts: list[AttemptResult]) -> dict:
    out: dict[str, Any] = {}
    for flag, name in ((True, "with_retries"), (False, "without_retries")):
        eps = [e for e in episodes if e["retries"] == flag]
        out[f"success_rate_{name}"] = (sum(e["success"] for e in eps) / len(eps)) if eps else None
        out[f"median_time_to_success_s_{name}"] = _median([e["time_to_success_s"] for e in eps])
        out[f"mean_attempts_{name}"] = float(np.mean([e["attempts"] for e in eps])) if eps else None
        out[f"episodes_{name}"] = len(eps)
    # detection quality over every attempt of both runs, each distinct attempt counted once
    # (the first attempt of a seed is the same simulation with retries on and off)
    uniq = {}
    for a in attempts:
        uniq.setdefault((a.episode_seed, a.attempt, a.scene_seed), a)
    att = list(uniq.values())
    delays = [a.detection_delay_s for a in att if a.detection_delay_s is not None]
    n = len(att)
    gt_pos = [a for a in att if a.gt_success]
    out.update({
        "attempts": n,
        "median_detection_delay_s": _median(delays),
        "p90_detection_delay_s": float(np.percentile(delays, 90)) if delays else None,
        "false_successes": sum(a.false_success for a in att),
        "false_success_rate": (sum(a.false_success for a in att) / n) if n else None,
        "missed_successes": sum(a.missed_success for a in att),
        "missed_success_rate": (sum(a.missed_success for a in gt_pos) / len(gt_pos)) if gt_pos else None,
        "gt_successful_attempts": len(gt_pos),
        "decisions": {k: sum(1 for a in att if a.decided_by == k)
                      for k in ("SUCCESS", "STALL", "REGRESSION", "TIMEOUT", "ABORT")},
        "decisions_by_injection": {
            inj: {k: sum(1 for a in att if a.injection == inj and a.decided_by == k)
                  for k in ("SUCCESS", "STALL", "REGRESSION", "TIMEOUT")}
            for inj in sorted({a.injection for a in att})},
        "mean_estimate_latency_ms": float(np.mean([a.mean_latency_ms for a in att])) if att else None,
    })
    return out


def _sim_and_estimator(model, difficulty: float, task: str, estimate_fps: float | None, estimator_factory,
                       success_model=None):
    """The simulator and the estimator: the WVM's streaming estimator, or `estimator_factory(sim)`
    (e.g. a StateOracleEstimator reading the simulator's state; then `model` may be None); with
    `success_model` (wvm_ros.core.success) every estimate also carries its success probability,
    as the value node publishes it."""
    from wvm_ros.core.sim import PushTSim
    from wvm_ros.core.streaming import StreamingValueEstimator

    if model is None and estimator_factory is None:
        raise ValueError("experiment: needs a value model or an estimator_factory")
    size = tuple(model.config.image_size) if model is not None else (96, 96)
    sim = PushTSim(image_size=size, difficulty=difficulty)
    est = (estimator_factory(sim) if estimator_factory is not None
           else StreamingValueEstimator(model, task, estimate_fps=estimate_fps))
    if success_model is not None:
        from wvm_ros.core.success import SuccessEstimator, WithSuccess

        est = WithSuccess(est, SuccessEstimator(success_model))
    return sim, est


def run_experiment(model, cfg: ExperimentConfig, progress: bool = True, estimator_factory=None,
                   estimator_info: dict | None = None, success_model=None) -> dict:
    """Run every seed with retries on and off; returns {"summary", "episodes", "attempts", "config"}.

    By default the WVM `model` runs through the streaming estimator; `estimator_factory(sim)`
    replaces it (described in the summary by `estimator_info`). `success_model`: a success
    classifier whose probability goes to the state machine beside the value
    (cfg.episode.success_source says which the success rule reads)."""
    from tqdm import tqdm

    from wvm_ros.core.sim import Injection, ScriptedPushTPolicy

    if cfg.episode.success_source == "classifier" and success_model is None:
        raise ValueError(f"experiment: success_source {cfg.episode.success_source!r} needs a success classifier "
                         "(--success-checkpoint)")
    sim, estimator = _sim_and_estimator(model, cfg.difficulty, cfg.task, cfg.estimate_fps, estimator_factory,
                                        success_model)

    def policy_factory(injections, seed):
        return ScriptedPushTPolicy(injections=[Injection(**i) for i in injections], seed=seed)

    episodes, attempts = [], []
    traces_left = [cfg.keep_traces]

    def keep():
        if traces_left[0] > 0:
            traces_left[0] -= 1
            return True
        return False

    seeds = [cfg.seed + i for i in range(cfg.episodes)]
    t0 = time.monotonic()
    bar = tqdm(total=2 * len(seeds), desc="retries experiment", unit="episode", disable=not progress)
    for s in seeds:
        for retries in (True, False):
            if not retries and cfg.reuse_first_attempt:
                # the run without retries is the first attempt of the run with retries: the same
                # scene seed, injections, policy seed and model (tests/test_experiment.py checks
                # that simulating it again gives the same result)
                ep, res = single_from_first_attempt(episodes[-1], attempts[-episodes[-1]["attempts"]], cfg)
            else:
                ep, res = run_episode(sim, policy_factory, estimator, cfg, s, retries, keep_trace=keep)
            episodes.append(ep)
            attempts.extend(res)
            bar.update(1)
            bar.set_postfix_str(f"seed {s} {'retries' if retries else 'single'}: "
                                f"{'/'.join(ep['outcomes'])} gt={'ok' if ep['success'] else 'fail'}")
    bar.close()
    sim.close()
    summary = summarise(episodes, attempts)
    summary["wall_time_s"] = time.monotonic() - t0
    summary["model"] = estimator_info if estimator_info is not None else {
        "name": model.name, "checkpoint_id": model.checkpoint_id, "untrained": bool(model.untrained)}
    summary["success_classifier"] = (None if success_model is None
                                     else {"checkpoint_id": success_model.checkpoint_id})
    return {"summary": summary, "episodes": episodes, "attempts": [asdict(a) for a in attempts],
            "config": cfg.to_dict()}


# ------------------------------------------------------------------------- calibration
def record_trace(sim, policy_factory, estimator, scene_seed: int, injections: list[dict],
                 max_s: float = 30.0, after_success_s: float = 3.0) -> dict:
    """Run one attempt without any decision (to `after_success_s` past ground-truth success,
    or `max_s`) and record the estimates: {"t", "pred"} at estimate times, {"t_gt"}."""
    import torch

    hz = float(sim.control_hz)
    sample_every = max(1, int(round(hz / float(estimator.estimate_fps))))
    state = sim.reset(seed=scene_seed)
    policy = policy_factory(injections, scene_seed)
    estimator.reset()
    torch.manual_seed(scene_seed)
    ts, preds, gts, succ = [], [], [], []
    t_gt, last = None, None
    for step in range(int(max_s * hz) + 1):
        t = step / hz
        if sim.success and t_gt is None:
            t_gt = t
        if t_gt is not None and t - t_gt >= after_success_s:
            break
        if step % sample_every == 0:
            e = estimator.push(sim.render(), t)
            if e is not None and e.stamp_s != last:
                last = e.stamp_s
                ts.append(t)
                preds.append(float(e.progress))
                succ.append(float(e.success))
                gts.append(float(sim.progress))
        state = sim.step(policy.act(state)).state
    return {"scene_seed": scene_seed, "injection": ",".join(i["kind"] for i in injections) or "none",
            "t": ts, "pred": preds, "success": succ, "gt": gts, "t_gt": t_gt, "t_end": t}


def replay(trace: dict, ecfg: EpisodeConfig, dt: float = 0.1) -> tuple[str, float]:
    """The state machine's first decision on a recorded attempt: (kind, time). Exactly what the
    live loop decides, since nothing acts on the robot before the first decision."""
    sm = EpisodeStateMachine(ecfg)
    sm.start_episode(0.0)
    succ = trace.get("success") or [math.nan] * len(trace["pred"])   # traces recorded before it existed
    est = dict(zip((round(t / dt) for t in trace["t"]), zip(trace["pred"], succ)))
    for k in range(int(round(trace["t_end"] / dt)) + 1):
        t = k * dt
        if k in est:
            sm.update(t, *est[k])
        else:
            sm.tick(t)
        if sm.state != RUNNING:
            return sm.current.kind, t
    return "NONE", trace["t_end"]


def score_replays(traces: list[dict], ecfg: EpisodeConfig) -> dict:
    delays, false_s, missed, stuck_caught, clean_failed, n_stuck, n_clean = [], 0, 0, 0, 0, 0, 0
    for tr in traces:
        kind, t = replay(tr, ecfg)
        if kind == "SUCCESS":
            if tr["t_gt"] is None or tr["t_gt"] > t + 1e-9:
                false_s += 1
            else:
                delays.append(t - tr["t_gt"])
        elif tr["t_gt"] is not None:   # reached, but failed or not detected within the recording
            missed += 1
        if tr["injection"] == "stuck":
            n_stuck += 1
            stuck_caught += kind in ("STALL", "REGRESSION", "TIMEOUT")
        elif tr["injection"] in ("none", "hesitation") and tr["t_gt"] is not None:
            n_clean += 1   # clean or hesitating attempts that succeed: a failure decision is false
            clean_failed += kind in ("STALL", "REGRESSION", "TIMEOUT")
    n = len(traces)
    return {"median_delay_s": float(np.median(delays)) if delays else None,
            "p90_delay_s": float(np.percentile(delays, 90)) if delays else None,
            "false_success_rate": false_s / n if n else None, "missed": missed,
            "stuck_caught": f"{stuck_caught}/{n_stuck}", "false_failures_clean": f"{clean_failed}/{n_clean}",
            "random_caught": f"{sum(1 for tr in traces if tr['injection'] == 'random' and replay(tr, ecfg)[0] != 'SUCCESS')}"
                             f"/{sum(1 for tr in traces if tr['injection'] == 'random')}"}


def calibrate(model, seeds: list[int], mix: "InjectionMix", difficulty: float, task: str,
              grid: dict[str, list], base: EpisodeConfig | None = None, progress: bool = True,
              estimate_fps: float | None = None, estimator_factory=None, success_model=None) -> dict:
    """Record one attempt per seed (injections drawn as in the experiment), then score every
    combination of `grid` (EpisodeConfig field -> values) by replay. `estimator_factory` and
    `success_model` as in run_experiment."""
    import itertools

    from tqdm import tqdm

    from wvm_ros.core.sim import Injection, ScriptedPushTPolicy

    sim, estimator = _sim_and_estimator(model, difficulty, task, estimate_fps, estimator_factory, success_model)
    factory = lambda inj, seed: ScriptedPushTPolicy(injections=[Injection(**i) for i in inj], seed=seed)  # noqa: E731
    traces = []
    for s in tqdm(seeds, desc="recording attempts", disable=not progress):
        traces.append(record_trace(sim, factory, estimator, s * 1000 + 1, mix.draw(s, 1, sim.control_hz)))
    base = base or EpisodeConfig()
    rows = []
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        cfg = EpisodeConfig.from_mapping({**base.to_dict(), **dict(zip(keys, combo))})
        rows.append({**dict(zip(keys, combo)), **score_replays(traces, cfg)})
    return {"traces": traces, "rows": rows}


TARGETS = {"median_detection_delay_s": ("<=", 1.0), "false_success_rate": ("<=", 0.02)}


def check_targets(summary: dict) -> dict[str, bool]:
    ok = {}
    for k, (op, v) in TARGETS.items():
        x = summary.get(k)
        ok[k] = x is not None and (x <= v if op == "<=" else x >= v)
    w, wo = summary.get("success_rate_with_retries"), summary.get("success_rate_without_retries")
    ok["success_rate_with_retries > without"] = w is not None and wo is not None and w > wo
    return ok


def _fmt(x, pct=False, unit=""):
    if x is None:
        return "n/a"
    return f"{100 * x:.1f} %" if pct else f"{x:.2f}{unit}"


def write_report(result: dict, output: str | Path) -> dict[str, Path]:
    """retries.json, retries.md, retries.png and attempts.jsonl under `output`."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    s = result["summary"]
    targets = check_targets(s)
    doc = dict(s)
    doc["targets_met"] = targets
    doc["config"] = result["config"]
    doc["episodes"] = result["episodes"]
    paths = {"json": out / "retries.json", "md": out / "retries.md", "png": out / "retries.png",
             "attempts": out / "attempts.jsonl"}
    paths["json"].write_text(json.dumps(doc, indent=2, default=float))
    with open(paths["attempts"], "w") as f:
        for a in result["attempts"]:
            f.write(json.dumps({k: v for k, v in a.items() if k != "trace"}, default=float) + "\n")
    m = s["model"]
    lines = [
        "# Retries experiment (PushT simulator, injected failures)",
        "",
        f"Model: {m['name']} `{m['checkpoint_id']}`{' (UNTRAINED: random weights)' if m['untrained'] else ''}"
        f"{'; success classifier `' + s['success_classifier']['checkpoint_id'] + '`' if s.get('success_classifier') else ''}; "
        f"{s['episodes_with_retries']} seeds, each with retries (up to {result['config']['max_attempts']} attempts) "
        f"and without; {s['attempts']} distinct attempts; wall time {s['wall_time_s']:.0f} s.",
        "",
        "| metric | with retries | without retries |",
        "|---|---|---|",
        f"| success rate (ground truth) | {_fmt(s['success_rate_with_retries'], True)} | "
        f"{_fmt(s['success_rate_without_retries'], True)} |",
        f"| median time to success | {_fmt(s['median_time_to_success_s_with_retries'], unit=' s')} | "
        f"{_fmt(s['median_time_to_success_s_without_retries'], unit=' s')} |",
        f"| mean attempts per episode | {_fmt(s['mean_attempts_with_retries'])} | "
        f"{_fmt(s['mean_attempts_without_retries'])} |",
        "",
        "| success detection (all distinct attempts) | value | target |",
        "|---|---|---|",
        f"| median detection delay after ground-truth success | {_fmt(s['median_detection_delay_s'], unit=' s')} | "
        f"<= 1 s ({'met' if targets['median_detection_delay_s'] else 'NOT met'}) |",
        f"| 90th percentile detection delay | {_fmt(s['p90_detection_delay_s'], unit=' s')} | |",
        f"| false successes | {s['false_successes']} / {s['attempts']} = {_fmt(s['false_success_rate'], True)} | "
        f"<= 2 % ({'met' if targets['false_success_rate'] else 'NOT met'}) |",
        f"| missed successes | {s['missed_successes']} / {s['gt_successful_attempts']} successful attempts | |",
        f"| success rate with retries > without | | "
        f"{'met' if targets['success_rate_with_retries > without'] else 'NOT met'} |",
        "",
        "Decisions by injected behaviour (distinct attempts):",
        "",
        "| injection | SUCCESS | STALL | REGRESSION | TIMEOUT |",
        "|---|---|---|---|---|",
    ]
    for inj, d in s["decisions_by_injection"].items():
        lines.append(f"| {inj} | {d['SUCCESS']} | {d['STALL']} | {d['REGRESSION']} | {d['TIMEOUT']} |")
    sm_cfg = {k: v for k, v in result["config"]["episode"].items() if k not in ("max_attempts", "retries")}
    lines += ["", "State machine: " + ", ".join(f"{k}={v}" for k, v in sm_cfg.items()), ""]
    paths["md"].write_text("\n".join(lines))
    _plot(result, paths["png"])
    return paths


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["summary"]
    traces = [a for a in result["attempts"] if a.get("trace")]
    fig = plt.figure(figsize=(13, 7.5))
    ax1 = fig.add_subplot(2, 3, 1)
    vals = [s["success_rate_without_retries"] or 0.0, s["success_rate_with_retries"] or 0.0]
    ax1.bar(["without retries", "with retries"], vals, color=["#999999", "#2a7ab9"])
    for i, v in enumerate(vals):
        ax1.text(i, v + 0.02, f"{100 * v:.0f} %", ha="center")
    ax1.set_ylim(0, 1.1)
    ax1.set_title("success rate (ground truth), same seeds")
    ax2 = fig.add_subplot(2, 3, 2)
    uniq = {}
    for a in result["attempts"]:
        uniq.setdefault((a["episode_seed"], a["attempt"], a["scene_seed"]), a)
    delays = [a["detection_delay_s"] for a in uniq.values() if a["detection_delay_s"] is not None]
    if delays:
        ax2.hist(delays, bins=min(20, max(5, len(delays) // 2)), color="#2a7ab9")
    ax2.axvline(1.0, color="r", ls="--", label="target 1 s")
    ax2.set_xlabel("detection delay after ground-truth success (s)")
    ax2.set_title(f"success detection: median {_fmt(s['median_detection_delay_s'], unit=' s')}")
    ax2.legend()
    ax3 = fig.add_subplot(2, 3, 3)
    dec = s["decisions"]
    ax3.bar(list(dec), list(dec.values()), color="#555555")
    ax3.set_title(f"decisions; false successes {s['false_successes']}, missed {s['missed_successes']}")
    for i, a in enumerate(traces[:3]):
        ax = fig.add_subplot(2, 3, 4 + i)
        tr = a["trace"]
        ax.plot(tr["t"], tr["gt"], label="ground truth (coverage)", color="k")
        ax.plot(tr["t"], tr["pred"], label="WVM progress", color="#2a7ab9")
        if any(not math.isnan(x) for x in tr.get("success", [])):
            ax.plot(tr["t"], tr["success"], label="success probability", color="#d97a00", lw=1)
        if a["t_gt_success"] is not None:
            ax.axvline(a["t_gt_success"], color="g", ls=":", label="sim success")
        ax.axvline(a["t_decision"], color="r", ls="--", label=a["decided_by"])
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("time in attempt (s)")
        ax.set_title(f"seed {a['episode_seed']} attempt {a['attempt']} ({a['injection']})", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
