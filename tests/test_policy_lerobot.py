"""Policies (wvm_ros.core.policies): a small LeRobot ACT policy with random weights saved
locally with save_pretrained, loaded offline and run, in process and in the policy node
(JointTrajectory output); the scripted PushT policy's per-attempt injections; bad input."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from conftest import node_cmd, requires_ros

STANDIN = r"""
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from wvm_msgs.msg import Progress
rclpy.init()
n = Node("value_standin")
pub = n.create_publisher(Progress, "/wvm/progress", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
def tick():
    m = Progress(); m.progress = 0.2; m.valid = True
    pub.publish(m)
n.create_timer(0.1, tick)
try:
    rclpy.spin(n)
except Exception:
    pass
"""


def save_tiny_act(path, image_hw=(64, 64)) -> None:
    """A tiny ACT (random weights, no pretrained backbone: nothing is downloaded) with its
    processors, written the way lerobot's trainer writes a checkpoint."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors

    cfg = ACTConfig(
        input_features={"observation.state": PolicyFeature(FeatureType.STATE, (5,)),
                        "observation.image": PolicyFeature(FeatureType.VISUAL, (3, *image_hw))},
        output_features={"action": PolicyFeature(FeatureType.ACTION, (2,))},
        chunk_size=5, n_action_steps=5, dim_model=32, n_heads=2, dim_feedforward=64, n_encoder_layers=1,
        n_decoder_layers=1, use_vae=False, pretrained_backbone_weights=None, device="cpu")
    policy = ACTPolicy(cfg)
    pre, post = make_pre_post_processors(cfg, dataset_stats=None)
    policy.save_pretrained(str(path))
    pre.save_pretrained(str(path))
    post.save_pretrained(str(path))


@pytest.fixture(scope="module")
def act_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("act_policy") / "pretrained_model"
    save_tiny_act(d)
    return d


def test_lerobot_policy_loads_offline_and_acts(act_dir):
    from wvm_ros.core.policies import LeRobotPolicy, PolicyInputError, load_policy

    pol = load_policy("lerobot", checkpoint=str(act_dir.parent), device="cpu")   # the run folder works too
    assert isinstance(pol, LeRobotPolicy) and pol.policy_type == "act"
    assert pol.needs_images == ("observation.image",) and pol.state_dim == 5 and pol.action_dim == 2
    pol.reset(seed=0)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(96, 80, 3), dtype=np.uint8)          # resized to 64x64
    a1 = pol.act(np.array([100.0, 120.0, 300.0, 250.0, 0.3]), {"/camera/image_raw": img})
    assert a1.shape == (2,) and np.all(np.isfinite(a1))
    # same seed, same observation -> same action (the chunk is replayed: reset first)
    pol.reset(seed=0)
    a2 = pol.act(np.array([100.0, 120.0, 300.0, 250.0, 0.3]), {"/camera/image_raw": img})
    np.testing.assert_allclose(a1, a2, rtol=1e-5, atol=1e-6)
    with pytest.raises(PolicyInputError, match="expects 5"):
        pol.act(np.zeros(3), {"/camera/image_raw": img})
    with pytest.raises(PolicyInputError, match="RGB uint8"):
        pol.reset()
        pol.act(np.zeros(5), {"/camera/image_raw": np.zeros((10, 10), np.uint8)})


def test_lerobot_policy_refuses_non_finite_state_and_action(act_dir):
    """A NaN / inf state never reaches the model (PolicyInputError naming the feature and the
    entries); a model that outputs NaN / inf gives PolicyOutputError, not an action."""
    import torch

    from wvm_ros.core.policies import PolicyInputError, PolicyOutputError, load_policy

    pol = load_policy("lerobot", checkpoint=str(act_dir), device="cpu")
    img = np.zeros((64, 64, 3), np.uint8)
    pol.reset(seed=0)
    for bad, needle in (([math.nan, 0, 0, 0, 0], r"\[0\]=nan"), ([0, 0, 0, math.inf, 0], r"\[3\]=inf"),
                        ([0, 0, 0, 0, 1e300], "overflows float32")):
        with pytest.raises(PolicyInputError, match=needle) as ei:
            pol.act(np.array(bad), {"/camera/image_raw": img})
        assert "observation.state" in str(ei.value) and "expected 5 finite" in str(ei.value)
    pol.strict_state = False                       # the padding path checks too
    with pytest.raises(PolicyInputError, match="non-finite"):
        pol.act(np.array([math.nan, 0.0]), {"/camera/image_raw": img})
    pol.strict_state = True

    pol.reset(seed=0)
    pol.policy.select_action = lambda batch: torch.tensor([[math.nan, 1.0]])
    with pytest.raises(PolicyOutputError, match=r"LeRobot policy act .* non-finite action \(\[0\]=nan") as ei:
        pol.act(np.zeros(5), {"/camera/image_raw": img})
    assert "not sent to the robot" in str(ei.value)


def test_bad_policy_inputs_are_clear(tmp_path):
    from wvm_ros.core.policies import PolicyLoadError, load_policy

    with pytest.raises(PolicyLoadError, match="no config.json"):
        load_policy("lerobot", checkpoint=str(tmp_path))
    (tmp_path / "config.json").write_text('{"type": "act"}')
    with pytest.raises(PolicyLoadError, match="model.safetensors is missing"):
        load_policy("lerobot", checkpoint=str(tmp_path))
    with pytest.raises(PolicyLoadError, match="needs a checkpoint"):
        load_policy("lerobot", checkpoint="")
    with pytest.raises(PolicyLoadError, match="unknown policy kind"):
        load_policy("telepathy")
    with pytest.raises(PolicyLoadError, match="injections"):
        load_policy("scripted", injections=[{"kind": "nap", "start": 1, "duration": 2}])


def test_scripted_policy_injects_on_chosen_attempts_only():
    from wvm_ros.core.policies import load_policy
    from wvm_ros.core.sim import PushTSim

    pol = load_policy("scripted", seed=0, injections=[{"kind": "stuck", "start": 0}], inject_on_attempts=[1])
    sim = PushTSim(image_size=32)
    moved = {}
    for attempt in (1, 2):
        state = sim.reset(seed=3)
        pol.reset(seed=attempt, attempt=attempt)
        assert [i.kind for i in pol.active_injections] == (["stuck"] if attempt == 1 else [])
        b0 = state[2:4].copy()
        for _ in range(60):
            state = sim.step(pol.act(state)).state
        moved[attempt] = (float(np.linalg.norm(state[2:4] - b0)), sim.progress)
    assert moved[1][0] < 1.0 and moved[1][1] == 0.0        # stuck: the block never moves
    assert moved[2][0] > 5.0                                # the clean retry pushes it


def test_scripted_policy_refuses_a_non_finite_action():
    from wvm_ros.core.policies import PolicyInputError, PolicyOutputError, load_policy

    pol = load_policy("scripted", seed=0)
    pol.reset(seed=0)
    with pytest.raises(PolicyInputError, match="5 finite numbers"):
        pol.act(np.array([math.nan, 0, 0, 0, 0]))
    pol._impl.act = lambda s: np.array([math.nan, 1.0])
    with pytest.raises(PolicyOutputError, match=r"scripted PushT policy returned a non-finite action \(\[0\]=nan"):
        pol.act(np.array([100.0, 110.0, 200.0, 210.0, 0.5]))


@requires_ros
@pytest.mark.ros
def test_policy_node_runs_lerobot_policy_and_publishes_trajectories(act_dir, ros_env, procs):
    from trajectory_msgs.msg import JointTrajectory
    from wvm_msgs.msg import EpisodeEvent

    from wvm_ros.ros.testing import TopicProbe

    topics = {"/robot/joint_trajectory": JointTrajectory, "/wvm/episode_event": EpisodeEvent}
    with TopicProbe(topics) as probe:
        procs.start("sim_robot", node_cmd("wvm_ros.nodes.sim_robot_node", "-p", "width:=48", "-p", "height:=48"),
                    env=ros_env)
        procs.start("value", [sys.executable, "-c", STANDIN], env=ros_env)
        policy = procs.start("policy", node_cmd(
            "wvm_ros.nodes.policy_node", "-p", "policy:=lerobot", "-p", f"policy_checkpoint:={act_dir}",
            "-p", "image_topics:=['/camera/image_raw']", "-p", "action_mode:=joint_trajectory",
            "-p", "stall_min_gain:=0.0", "-p", "start_delay_s:=0.5"), env=ros_env)

        def alive():
            if not policy.alive():
                raise AssertionError("policy died:\n" + policy.log_tail())

        probe.wait_for(lambda: len(probe.get("/robot/joint_trajectory")) >= 5, timeout=60,
                       what="JointTrajectory actions from the LeRobot policy", alive=alive)
        msg = probe.get("/robot/joint_trajectory")[-1]
        assert list(msg.joint_names) == ["agent_x", "agent_y"] and len(msg.points) == 1
        pos = list(msg.points[0].positions)
        assert len(pos) == 2 and all(math.isfinite(v) for v in pos)
        assert msg.points[0].time_from_start.nanosec > 0
        assert "lerobot act" in policy.log_tail(200)
