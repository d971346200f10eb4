"""PushT simulator: a thin, deterministic wrapper around gym-pusht.

`PushTSim` stands in for robot + camera in wvm_ros. It renders RGB frames at any size
(gym-pusht draws with pygame surfaces, no OpenGL), exposes the state vector that the sim
robot node publishes on `/robot/joint_states` and that the scripted policy acts on, and
computes evaluation-only ground truth from the goal coverage.

Coordinates are gym-pusht's: sim pixels 0..512 in x and y, angles in radians. The block
pose is the pose of the T's body origin (the middle of the bar's long edge on the stem
side), exactly as in gym-pusht's `state` observation; the goal pose is fixed at
(256, 256, pi/4).

Ground-truth progress (EVALUATION ONLY, never an input to a decision on the robot):
    coverage  = area(block  intersect  goal T) / area(goal T)            (gym-pusht's)
    reward    = clip(coverage / success_threshold, 0, 1)                 (gym-pusht's reward)
    progress  = clip((coverage - c0) / (success_threshold - c0), 0, 1)
where c0 is the coverage right after `reset()`. So `progress` is 0 at the start of every
attempt and 1 exactly when the attempt succeeds, whatever the start state; it falls when
a push moves the block away from the goal. (The paper's time-based ground truth lives in
`wvm_ros.core.groundtruth`.)

`difficulty` in (0, 1] scales the random start: 1.0 is gym-pusht's own distribution
(block uniform in [100, 400]^2, angle uniform in [-pi, pi)); below 1 the block starts at
the goal pose plus `difficulty` times a uniform offset of up to +-150 px per axis and
+-pi rad. The agent starts uniformly in [50, 450]^2, clear of the block. Start states
whose coverage already exceeds `max_start_coverage` are re-drawn.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# --- task geometry (public facts of the PushT task, used by the scripted policy) -----------
ARENA_MIN, ARENA_MAX = 0.0, 512.0
#: inner faces of the walls (segments at 5 and 506 with radius 2)
WALL_MIN, WALL_MAX = 7.0, 504.0
AGENT_RADIUS = 15.0
GOAL_POSE = np.array([256.0, 256.0, math.pi / 4], dtype=np.float64)
#: T outline in the block's body frame (origin = block pose), counter-clockwise
T_OUTLINE = np.array(
    [(-60, 0), (60, 0), (60, 30), (15, 30), (15, 120), (-15, 120), (-15, 30), (-60, 30)],
    dtype=np.float64,
)
#: the two convex parts (bar, stem) in the body frame
T_PARTS = (
    np.array([(-60, 30), (60, 30), (60, 0), (-60, 0)], dtype=np.float64),
    np.array([(-15, 30), (-15, 120), (15, 120), (15, 30)], dtype=np.float64),
)
#: centre of gravity in the body frame (gym-pusht: mean of the two parts' centroids)
T_COG = np.array([0.0, 45.0])
#: moment of inertia / mass of the block about its centre of gravity (gym-pusht: mass 1,
#: moment = 2 * moment_for_poly(1, bar))
T_GYRATION_SQ = 2.0 * (120.0**2 + 30.0**2) / 12.0
STATE_NAMES = ("agent_x", "agent_y", "block_x", "block_y", "block_theta")
DEFAULT_SUCCESS_THRESHOLD = 0.95  # gym-pusht's own


def rot(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def body_to_world(points: np.ndarray, pose) -> np.ndarray:
    """Points (N, 2) in the block's body frame -> world, for pose (x, y, theta)."""
    return np.asarray(points) @ rot(float(pose[2])).T + np.asarray(pose[:2], dtype=np.float64)


def wrap_angle(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def pose_error(state, goal_pose=GOAL_POSE) -> float:
    """Distance of the block from the goal in pixels: |centre-of-gravity offset| plus the angle
    error times the block's radius of gyration (state = [agent_x, agent_y, block_x, block_y, theta])."""
    s = np.asarray(state, dtype=np.float64).reshape(-1)
    c = body_to_world(T_COG[None], s[2:5])[0]
    g = body_to_world(T_COG[None], goal_pose)[0]
    return float(np.linalg.norm(c - g) + math.sqrt(T_GYRATION_SQ) * abs(wrap_angle(float(goal_pose[2] - s[4]))))


def _parse_size(image_size) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        h = w = int(image_size)
    else:
        try:
            h, w = (int(v) for v in image_size)
        except (TypeError, ValueError):
            raise ValueError(f"image_size: expected an int or (height, width), got {image_size!r}") from None
    if h < 8 or w < 8 or h > 4096 or w > 4096:
        raise ValueError(f"image_size: expected height and width in 8..4096, got ({h}, {w})")
    return h, w


@dataclass
class StepResult:
    state: np.ndarray  # (5,) agent_x, agent_y, block_x, block_y, block_theta
    agent_velocity: np.ndarray  # (2,)
    coverage: float
    progress: float
    success: bool
    step: int


class PushTSim:
    """gym-pusht with a configurable render size, difficulty and coverage ground truth."""

    def __init__(
        self,
        image_size=96,
        difficulty: float = 0.5,
        success_threshold: float | None = None,
        max_start_coverage: float = 0.5,
        render_action: bool = False,
        control_hz: int = 10,
    ):
        # gym-pusht imports pygame, which prints a banner unless told not to
        import os

        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        from gym_pusht.envs.pusht import PushTEnv

        if not (0.0 < float(difficulty) <= 1.0):
            raise ValueError(f"difficulty: expected a number in (0, 1], got {difficulty!r}")
        if success_threshold is not None and not (0.0 < float(success_threshold) <= 1.0):
            raise ValueError(f"success_threshold: expected a number in (0, 1], got {success_threshold!r}")
        if not (0.0 <= float(max_start_coverage) < 1.0):
            raise ValueError(f"max_start_coverage: expected a number in [0, 1), got {max_start_coverage!r}")
        self.image_size = _parse_size(image_size)
        self.difficulty = float(difficulty)
        self.max_start_coverage = float(max_start_coverage)
        self.render_action = bool(render_action)
        h, w = self.image_size
        self._env = PushTEnv(
            obs_type="state",
            render_mode="rgb_array",
            observation_width=w,
            observation_height=h,
            visualization_width=w,
            visualization_height=h,
        )
        self.success_threshold = (
            float(success_threshold) if success_threshold is not None else float(self._env.success_threshold)
        )
        # gym-pusht integrates 1 / control_hz s per step in 0.01 s physics steps
        if isinstance(control_hz, bool) or int(control_hz) != control_hz or int(control_hz) < 1 \
                or 100 % int(control_hz) != 0:
            raise ValueError(f"control_hz: expected a divisor of 100 (1, 2, 4, 5, 10, 20, 25, 50, 100), "
                             f"got {control_hz!r}")
        self._env.control_hz = int(control_hz)
        self.control_hz = float(control_hz)
        self.steps = 0
        self.start_coverage = 0.0
        self._coverage = 0.0
        self._reset_done = False

    # --- lifecycle ---------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> np.ndarray:
        """New attempt. Same seed -> same start state. Returns the state vector."""
        env = self._env
        env.reset(seed=None if seed is None else int(seed))
        rng = env.np_random
        for _ in range(1000):
            if self.difficulty >= 1.0:
                block = np.array([rng.integers(100, 400), rng.integers(100, 400), rng.uniform(-math.pi, math.pi)],
                                 dtype=np.float64)
            else:
                off = self.difficulty * np.array(
                    [rng.uniform(-150, 150), rng.uniform(-150, 150), rng.uniform(-math.pi, math.pi)])
                block = GOAL_POSE + off
            agent = np.array([rng.integers(50, 450), rng.integers(50, 450)], dtype=np.float64)
            if not self._start_ok(agent, block):
                continue
            self._set_state(agent, block)
            cov = float(env._get_coverage())
            if cov <= self.max_start_coverage:
                break
        else:  # pragma: no cover - the distributions above always admit a start state
            raise RuntimeError("PushTSim.reset: found no valid start state in 1000 draws")
        self.steps = 0
        self._coverage = self.start_coverage = cov
        self._reset_done = True
        return self.state

    def reset_to(self, agent_xy, block_pose) -> np.ndarray:
        """New attempt from a given start: agent (x, y), block pose (x, y, theta) of the body
        origin, in sim pixels / radians. Returns the state vector."""
        agent = np.asarray(agent_xy, dtype=np.float64).reshape(-1)
        block = np.asarray(block_pose, dtype=np.float64).reshape(-1)
        if agent.shape != (2,) or block.shape != (3,) or not (np.all(np.isfinite(agent)) and np.all(np.isfinite(block))):
            raise ValueError(f"reset_to: expected agent (x, y) and block (x, y, theta), got {agent_xy!r}, {block_pose!r}")
        if np.any(agent < WALL_MIN) or np.any(agent > WALL_MAX):
            raise ValueError(f"reset_to: agent {agent.tolist()} is outside the arena ({WALL_MIN}..{WALL_MAX})")
        # a fresh space already holding (about) this state: after a random reset, a contact
        # between the random agent and block would leave a warm-started impulse that nudges
        # the teleported block on the next physics step
        self._env.reset(options={"reset_to_state": np.concatenate([agent, block])})
        self._set_state(agent, block)
        self.steps = 0
        self._coverage = self.start_coverage = float(self._env._get_coverage())
        self._reset_done = True
        return self.state

    @staticmethod
    def _start_ok(agent: np.ndarray, block: np.ndarray) -> bool:
        import shapely.geometry as sg

        outline = body_to_world(T_OUTLINE, block)
        if outline.min() < WALL_MIN + 2 or outline.max() > WALL_MAX - 2:
            return False
        return sg.Polygon(outline).distance(sg.Point(agent)) > AGENT_RADIUS + 10

    def _set_state(self, agent: np.ndarray, block: np.ndarray) -> None:
        env = self._env
        env.agent.position = (float(agent[0]), float(agent[1]))
        env.agent.velocity = (0.0, 0.0)
        # angle first: pymunk rotates about the centre of gravity, so setting the position
        # afterwards puts the body origin exactly where asked
        env.block.angle = float(block[2])
        env.block.position = (float(block[0]), float(block[1]))
        env.block.velocity = (0.0, 0.0)
        env.block.angular_velocity = 0.0
        env.space.step(env.dt)
        env._last_action = None

    def step(self, action) -> StepResult:
        """One control step (1 / control_hz s of physics) towards target `action` = (x, y)."""
        if not self._reset_done:
            raise RuntimeError("PushTSim.step: call reset() first")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (2,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action: expected 2 finite numbers (target x, y in sim pixels 0..512), got {action!r}")
        a = np.clip(a, ARENA_MIN, ARENA_MAX)
        _, _, _, _, info = self._env.step(a)
        self._coverage = float(info["coverage"])
        self.steps += 1
        return StepResult(self.state, self.agent_velocity, self.coverage, self.progress, self.success, self.steps)

    # --- observations --------------------------------------------------------------------
    @property
    def state(self) -> np.ndarray:
        """[agent_x, agent_y, block_x, block_y, block_theta] (theta in [0, 2 pi)), float64."""
        return np.asarray(self._env.get_obs(), dtype=np.float64).copy()

    @property
    def agent_velocity(self) -> np.ndarray:
        return np.array(self._env.agent.velocity, dtype=np.float64)

    @property
    def coverage(self) -> float:
        return self._coverage

    @property
    def success(self) -> bool:
        return self._coverage >= self.success_threshold

    @property
    def reward(self) -> float:
        return float(np.clip(self._coverage / self.success_threshold, 0.0, 1.0))

    @property
    def progress(self) -> float:
        """Coverage-based ground-truth progress in [0, 1] (see the module docstring)."""
        c0 = min(self.start_coverage, self.success_threshold - 1e-6)
        return float(np.clip((self._coverage - c0) / (self.success_threshold - c0), 0.0, 1.0))

    @property
    def time_s(self) -> float:
        return self.steps / self.control_hz

    def render(self, size=None) -> np.ndarray:
        """RGB uint8 frame (H, W, 3) of the current scene, at `size` or the configured size."""
        if not self._reset_done:
            raise RuntimeError("PushTSim.render: call reset() first")
        h, w = self.image_size if size is None else _parse_size(size)
        env = self._env
        env.observation_width = env.visualization_width = w
        env.observation_height = env.visualization_height = h
        img = env._render(visualize=self.render_action)
        return np.ascontiguousarray(img, dtype=np.uint8)

    def close(self) -> None:
        self._env.close()
