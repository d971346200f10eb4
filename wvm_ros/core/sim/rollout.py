"""Roll out the scripted policy in the simulator and plan labelled suboptimal attempts.

Frame convention: frame t is the observation before action t. A rollout of an attempt that
succeeds after action k has T = k + 2 frames (the last one shows the solved scene, its
action is "hold position"). Segment labels are those of the frame's action, so a segment
(kind, m, n) covers frames m .. n-1 and progress resumes at frame n, as the paper's ground
truth expects.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wvm_ros.core.sim.pusht import PushTSim
from wvm_ros.core.sim.scripted import SEGMENT_KINDS, Injection, ScriptedPushTPolicy

#: episode kinds sim-collect knows; the first three have the paper's ground truth
EPISODE_KINDS = ("expert", "hesitation", "retry", "stuck", "random")


@dataclass
class Rollout:
    states: np.ndarray  # (T, 5)
    velocities: np.ndarray  # (T, 2)
    actions: np.ndarray  # (T, 2)
    coverage: np.ndarray  # (T,)
    progress_coverage: np.ndarray  # (T,)
    segment_codes: np.ndarray  # (T,) index into SEGMENT_KINDS
    success: np.ndarray  # (T,) success reached after this frame's action (last: its own)
    segments: list[tuple[str, int, int]]
    solved: bool
    frames: list[np.ndarray] = field(default_factory=list)  # (H, W, 3) uint8 when rendered

    @property
    def length(self) -> int:
        return int(self.states.shape[0])


def rollout(sim: PushTSim, policy: ScriptedPushTPolicy, seed: int, max_steps: int, render: bool = True,
            stop_on_success: bool = True) -> Rollout:
    state = sim.reset(seed)
    policy.reset(seed)
    states, vels, actions, cov, prog, codes, succ, frames = [], [], [], [], [], [], [], []
    for _ in range(max_steps):
        if render:
            frames.append(sim.render())
        states.append(state)
        vels.append(sim.agent_velocity)
        cov.append(sim.coverage)
        prog.append(sim.progress)
        a = policy.act(state)
        actions.append(a)
        codes.append(SEGMENT_KINDS.index(policy.segment))
        r = sim.step(a)
        succ.append(r.success)
        state = r.state
        if r.success and stop_on_success:
            break
    # the last observation (solved scene, or where the time ran out)
    if render:
        frames.append(sim.render())
    states.append(state)
    vels.append(sim.agent_velocity)
    cov.append(sim.coverage)
    prog.append(sim.progress)
    actions.append(state[:2].copy())
    codes.append(SEGMENT_KINDS.index("progress") if sim.success else codes[-1])
    succ.append(sim.success)
    segments = policy.finish()
    return Rollout(
        states=np.array(states), velocities=np.array(vels), actions=np.array(actions, dtype=np.float64),
        coverage=np.array(cov), progress_coverage=np.array(prog), segment_codes=np.array(codes, dtype=np.int64),
        success=np.array(succ, dtype=bool), segments=segments, solved=bool(sim.success), frames=frames,
    )


def plan_injection(kind: str, expert_length: int, fps: float, rng: np.random.Generator,
                   hesitation_s=(1.0, 3.0), retry_s=(2.0, 3.5), random_s=(1.5, 3.0),
                   start_frac=(0.2, 0.6)) -> list[Injection]:
    """Injections for one attempt of `kind`, placed within the expert attempt's length."""
    if kind not in EPISODE_KINDS:
        raise ValueError(f"kind: expected one of {EPISODE_KINDS}, got {kind!r}")
    if kind == "expert":
        return []
    lo = max(2, int(start_frac[0] * expert_length))
    hi = max(lo + 1, int(start_frac[1] * expert_length))
    start = int(rng.integers(lo, hi))
    if kind == "stuck":
        return [Injection("stuck", start)]
    span = {"hesitation": hesitation_s, "retry": retry_s, "random": random_s}[kind]
    duration = max(1, int(round(rng.uniform(*span) * fps)))
    return [Injection(kind, start, duration)]
