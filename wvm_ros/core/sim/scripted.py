"""A scripted PushT controller that acts from the state vector only.

Strategy (quasi-static pushing; gym-pusht's space has damping 0, so the block moves only
while it is pushed):
  * The desired block motion is the twist that removes the pose error of the block's centre
    of gravity: (dx, dy, dtheta * rho), rho = the block's radius of gyration.
  * Candidate contacts are points every few pixels along the T's outline, each pushed along
    its inward normal d. A push at point q moves the block along the twist
    (d, (q - cog) x d / rho) (impulse on a free rigid body). The controller picks the contact
    whose twist is best aligned with the desired one (cosine score), keeps it while it stays
    good (hysteresis), and:
      APPROACH: goes to a stand-off point outside the contact, walking around the block on a
                circle when the straight way would hit it;
      PUSH:     drives through the contact along d, with a push length that shrinks with
                the remaining error (fine alignment near the goal).
Only public facts of the task are used: the T's outline, the goal pose, the agent radius
(`wvm_ros.core.sim.pusht` constants) and the state vector
[agent_x, agent_y, block_x, block_y, block_theta].

Injected behaviour (`Injection`): at `start` (control step), for `duration` steps:
  hesitation  the agent stops and dithers a few pixels, backing off the block (flat progress)
  retry       the same controller run against the goal: a bad push that undoes progress;
              afterwards the controller recovers
  random      random targets in the arena (random pushes)
  stuck       from `start` to the end the agent stays away from the block (a failure)
`policy.segment` is the label of the last action ("progress" or the injection's kind), and
`policy.segments` lists the finished and open segments as (kind, m, n) with frames m..n
(n = the first frame after the segment, so x = n - m, as in `wvm_ros.core.groundtruth`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wvm_ros.core.sim.pusht import (
    AGENT_RADIUS,
    GOAL_POSE,
    T_COG,
    T_GYRATION_SQ,
    T_OUTLINE,
    WALL_MAX,
    WALL_MIN,
    body_to_world,
    rot,
    wrap_angle,
)

SEGMENT_KINDS = ("progress", "hesitation", "retry", "stuck", "random")
INJECTION_KINDS = ("hesitation", "retry", "stuck", "random")


@dataclass
class Injection:
    kind: str
    start: int
    duration: int = 0  # ignored for "stuck" (lasts to the end)

    def __post_init__(self):
        if self.kind not in INJECTION_KINDS:
            raise ValueError(f"Injection.kind: expected one of {INJECTION_KINDS}, got {self.kind!r}")
        if int(self.start) < 0:
            raise ValueError(f"Injection.start: expected a step index >= 0, got {self.start!r}")
        if self.kind != "stuck" and int(self.duration) < 1:
            raise ValueError(f"Injection.duration: expected >= 1 step for {self.kind!r}, got {self.duration!r}")
        self.start, self.duration = int(self.start), int(self.duration)


def _contact_candidates(spacing: float = 6.0, corner_margin: float = 4.0):
    """Points on the T outline (body frame) with their outward normals; none close to the
    two concave corners, which the round agent cannot reach."""
    pts, normals = [], []
    n = len(T_OUTLINE)
    concave = {3, 6}  # (15, 30) and (-15, 30)
    for i in range(n):
        a, b = T_OUTLINE[i], T_OUTLINE[(i + 1) % n]
        e = b - a
        length = float(np.linalg.norm(e))
        t_hat = e / length
        # counter-clockwise outline in a y-up frame -> outward normal is (e_y, -e_x)
        normal = np.array([t_hat[1], -t_hat[0]])
        k = max(1, int(length // spacing))
        for j in range(k + 1):
            s = j * length / k
            m_a = corner_margin + (AGENT_RADIUS if i in concave else 0.0)
            m_b = corner_margin + (AGENT_RADIUS if (i + 1) % n in concave else 0.0)
            if s < m_a or s > length - m_b:
                continue
            pts.append(a + t_hat * s)
            normals.append(normal)
    return np.array(pts), np.array(normals)


def _signed_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


_CAND_P, _CAND_N = _contact_candidates()
if _signed_area(T_OUTLINE) < 0:  # keep normals outward whatever the outline's orientation
    _CAND_N = -_CAND_N


def _seg_point_dist(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-9), 0.0, 1.0))
    return float(np.linalg.norm(a + t * ab - p))


def _segment_hits_t(a: np.ndarray, b: np.ndarray, outline_w: np.ndarray, clearance: float) -> bool:
    """Does the agent, moving from a to b, come within `clearance` of the T?"""
    import shapely.geometry as sg

    poly = sg.Polygon(outline_w)
    if np.allclose(a, b):
        return poly.distance(sg.Point(a)) < clearance
    return poly.distance(sg.LineString([a, b])) < clearance


class ScriptedPushTPolicy:
    """Scripted PushT controller: `act(state) -> target (x, y)` at the control rate."""

    def __init__(
        self,
        injections: list[Injection] | tuple[Injection, ...] = (),
        seed: int | None = None,
        goal_pose=GOAL_POSE,
        standoff: float = 10.0,
        max_push: float = 30.0,
        min_push: float = 3.0,
        switch_margin: float = 0.15,
        min_score: float = 0.35,
        retry_distance_penalty: float = 0.5,
    ):
        self.injections = sorted((i if isinstance(i, Injection) else Injection(**i) for i in injections),
                                 key=lambda i: i.start)
        for a, b in zip(self.injections, self.injections[1:]):
            if a.kind == "stuck" or b.start < a.start + a.duration:
                raise ValueError(f"injections overlap or follow 'stuck': {a} then {b}")
        self.goal = np.asarray(goal_pose, dtype=np.float64)
        self.standoff = float(standoff)
        self.max_push = float(max_push)
        self.min_push = float(min_push)
        self.switch_margin = float(switch_margin)
        self.min_score = float(min_score)
        self.retry_distance_penalty = float(retry_distance_penalty)
        self.rho = math.sqrt(T_GYRATION_SQ)
        self._seed = seed
        self.reset(seed)

    # --- public state ------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(self._seed if seed is None else seed)
        self.step_index = 0
        self.segment = "progress"
        self.segments: list[tuple[str, int, int]] = []
        self._open: tuple[str, int] | None = None
        self._contact: int | None = None
        self._mode = "approach"
        self._push_steps = 0
        self._hold: np.ndarray | None = None
        self._random_target: np.ndarray | None = None

    @property
    def mode(self) -> str:
        return self._mode

    def act(self, state) -> np.ndarray:
        """Target position (x, y) in sim pixels for this control step."""
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        if s.shape[0] < 5 or not np.all(np.isfinite(s[:5])):
            raise ValueError(
                "state: expected [agent_x, agent_y, block_x, block_y, block_theta] (5 finite numbers), "
                f"got {state!r}")
        agent, block = s[:2], s[2:5]
        kind = self._active_kind()
        self._track_segment(kind)
        if kind == "hesitation":
            target = self._hesitate(agent, block)
        elif kind == "retry":
            self._hold = None
            target = self._push_towards(agent, block, sign=-1.0)
        elif kind == "random":
            target = self._random(agent)
        elif kind == "stuck":
            target = self._stuck(agent, block)
        else:
            self._hold = self._random_target = None
            target = self._push_towards(agent, block, sign=1.0)
        self.step_index += 1
        return np.clip(target, WALL_MIN + AGENT_RADIUS, WALL_MAX - AGENT_RADIUS)

    def finish(self) -> list[tuple[str, int, int]]:
        """Close the open segment at the current frame; returns all segments."""
        if self._open is not None:
            self.segments.append((self._open[0], self._open[1], self.step_index))
            self._open = None
        return list(self.segments)

    # --- injections ----------------------------------------------------------------------
    def _active_kind(self) -> str:
        t = self.step_index
        for inj in self.injections:
            if inj.kind == "stuck" and t >= inj.start:
                return "stuck"
            if inj.start <= t < inj.start + inj.duration:
                return inj.kind
        return "progress"

    def _track_segment(self, kind: str) -> None:
        if kind != self.segment:
            if self._open is not None:
                self.segments.append((self._open[0], self._open[1], self.step_index))
                self._open = None
            if kind != "progress":
                self._open = (kind, self.step_index)
            # a change of behaviour invalidates the committed contact
            self._contact, self._mode = None, "approach"
        self.segment = kind

    def _away_from_block(self, agent: np.ndarray, block: np.ndarray) -> np.ndarray:
        cog = body_to_world(T_COG[None], block)[0]
        v = agent - cog
        n = float(np.linalg.norm(v))
        return v / n if n > 1e-6 else np.array([1.0, 0.0])

    def _hesitate(self, agent, block):
        if self._hold is None:  # back off a little, then dither around that point
            self._hold = agent + 8.0 * self._away_from_block(agent, block)
        return self._hold + self.rng.uniform(-3.0, 3.0, size=2)

    def _random(self, agent):
        if self._random_target is None or self.rng.random() < 0.2:
            self._random_target = self.rng.uniform(WALL_MIN + 30, WALL_MAX - 30, size=2)
        return self._random_target

    def _stuck(self, agent, block):
        if self._hold is None:
            corners = np.array([[40, 40], [40, 472], [472, 40], [472, 472]], dtype=np.float64)
            cog = body_to_world(T_COG[None], block)[0]
            self._hold = corners[int(np.argmax(np.linalg.norm(corners - cog, axis=1)))]
        # go there without touching the block, then dither
        if np.linalg.norm(agent - self._hold) > 10:
            return self._navigate(agent, self._hold, block)
        return self._hold + self.rng.uniform(-3.0, 3.0, size=2)

    # --- pushing ---------------------------------------------------------------------------
    def _desired_twist(self, block: np.ndarray, sign: float) -> np.ndarray:
        cog = body_to_world(T_COG[None], block)[0]
        goal_cog = body_to_world(T_COG[None], self.goal)[0]
        e_xy = goal_cog - cog
        e_th = wrap_angle(float(self.goal[2] - block[2]))
        return sign * np.array([e_xy[0], e_xy[1], e_th * self.rho])

    def _scores(self, block: np.ndarray, want: np.ndarray):
        R = rot(float(block[2]))
        q = body_to_world(_CAND_P, block)
        n = _CAND_N @ R.T
        d = -n
        cog = body_to_world(T_COG[None], block)[0]
        r = q - cog
        torque = (r[:, 0] * d[:, 1] - r[:, 1] * d[:, 0]) / self.rho
        twist = np.column_stack([d, torque])
        twist /= np.linalg.norm(twist, axis=1, keepdims=True)
        w = want / max(float(np.linalg.norm(want)), 1e-9)
        score = twist @ w
        # the agent must be able to stand outside the contact, inside the arena
        stand = q + n * (AGENT_RADIUS + self.standoff)
        lo, hi = WALL_MIN + AGENT_RADIUS + 1, WALL_MAX - AGENT_RADIUS - 1
        reachable = np.all((stand >= lo) & (stand <= hi), axis=1)
        score = np.where(reachable, score, -np.inf)
        return score, q, n

    def _push_towards(self, agent, block, sign: float) -> np.ndarray:
        want = self._desired_twist(block, sign)
        score, q, n = self._scores(block, want)
        if sign < 0:  # a bad push: take a contact near the agent rather than walk round the block
            stand = q + n * (AGENT_RADIUS + self.standoff)
            score = score - self.retry_distance_penalty * np.linalg.norm(stand - agent, axis=1) / 100.0
        best = int(np.argmax(score))
        c = self._contact
        if c is None or score[c] < self.min_score or score[best] > score[c] + self.switch_margin \
                or self._push_steps > 25:
            if c != best:
                self._contact, self._mode, self._push_steps = best, "approach", 0
            elif self._push_steps > 25:
                self._push_steps = 0
        c = self._contact
        qc, nc = q[c], n[c]
        contact_agent = qc + nc * AGENT_RADIUS  # agent centre touching the contact
        stand = qc + nc * (AGENT_RADIUS + self.standoff)
        # is the agent on the push line, behind the contact?
        rel = agent - contact_agent
        along = float(np.dot(rel, nc))  # > 0 outside the block
        lateral = float(np.linalg.norm(rel - along * nc))
        if self._mode == "push" and (lateral > 8.0 or along > self.standoff + 15.0):
            self._mode = "approach"
        if self._mode == "approach":
            if lateral < 4.0 and -2.0 < along < self.standoff + 4.0:
                self._mode, self._push_steps = "push", 0
            else:
                return self._navigate(agent, stand, block)
        self._push_steps += 1
        err = float(np.linalg.norm(want))
        push = float(np.clip(0.6 * err, self.min_push, self.max_push))
        return contact_agent - nc * push

    def _navigate(self, agent, goal, block) -> np.ndarray:
        """Next waypoint from agent to goal that keeps clear of the block."""
        outline = body_to_world(T_OUTLINE, block)
        clearance = AGENT_RADIUS + 2.0
        if not _segment_hits_t(agent, goal, outline, clearance):
            return goal
        cog = body_to_world(T_COG[None], block)[0]
        radius = float(np.max(np.linalg.norm(outline - cog, axis=1))) + AGENT_RADIUS + 8.0
        va, vg = agent - cog, goal - cog
        ra = float(np.linalg.norm(va))
        phi_a, phi_g = math.atan2(va[1], va[0]), math.atan2(vg[1], vg[0])
        delta = wrap_angle(phi_g - phi_a)
        lo, hi = WALL_MIN + AGENT_RADIUS + 1, WALL_MAX - AGENT_RADIUS - 1

        def path_ok(direction: float) -> bool:
            span = abs(delta) if direction == math.copysign(1.0, delta) else 2 * math.pi - abs(delta)
            for t in np.linspace(0.0, span, 12):
                p = cog + radius * np.array([math.cos(phi_a + direction * t), math.sin(phi_a + direction * t)])
                if np.any(p < lo) or np.any(p > hi):
                    return False
            return True

        direction = math.copysign(1.0, delta) if delta != 0 else 1.0
        if not path_ok(direction) and path_ok(-direction):
            direction = -direction
        if ra < radius - 5.0:  # first move straight away from the block
            return cog + va / max(ra, 1e-6) * radius
        step = 0.5  # rad per control step
        phi = phi_a + direction * step
        wp = cog + radius * np.array([math.cos(phi), math.sin(phi)])
        return np.clip(wp, lo, hi)
