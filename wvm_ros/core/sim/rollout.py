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
    # index of the first frame that shows the solved scene (None: never solved); frames after it
    # exist only with steps_after_success > 0
    first_success_frame: int | None = None

    @property
    def length(self) -> int:
        return int(self.states.shape[0])


def rollout(sim: PushTSim, policy: ScriptedPushTPolicy, seed: int, max_steps: int, render: bool = True,
            stop_on_success: bool = True, steps_after_success: int = 0) -> Rollout:
    """Run `policy` from the scene of `seed` for at most `max_steps` actions.

    stop_on_success: end at the first success (the last frame shows the solved scene), or,
    with steps_after_success = K > 0, K actions later: the policy keeps acting on the solved
    scene, as it does on a robot until a success detector stops it."""
    if steps_after_success < 0:
        raise ValueError(f"steps_after_success: expected >= 0, got {steps_after_success}")
    state = sim.reset(seed)
    policy.reset(seed)
    states, vels, actions, cov, prog, codes, succ, frames = [], [], [], [], [], [], [], []
    first_success: int | None = None
    for _ in range(max_steps + steps_after_success):
        if first_success is None and len(states) >= max_steps:
            break
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
        if r.success and first_success is None:
            first_success = len(states)  # the next frame shows the solved scene
        if stop_on_success and first_success is not None and len(states) >= first_success + steps_after_success:
            break
    # the last observation (solved scene, or where the time ran out)
    if render:
        frames.append(sim.render())
    states.append(state)
    vels.append(sim.agent_velocity)
    cov.append(sim.coverage)
    prog.append(sim.progress)
    actions.append(state[:2].copy())
    codes.append(SEGMENT_KINDS.index("progress") if sim.success or first_success is not None else codes[-1])
    succ.append(sim.success)
    segments = policy.finish()
    return Rollout(
        states=np.array(states), velocities=np.array(vels), actions=np.array(actions, dtype=np.float64),
        coverage=np.array(cov), progress_coverage=np.array(prog), segment_codes=np.array(codes, dtype=np.int64),
        success=np.array(succ, dtype=bool), segments=segments, solved=bool(sim.success or first_success is not None),
        frames=frames, first_success_frame=first_success,
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
