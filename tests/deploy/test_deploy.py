"""The deploy path without a ROS graph: command vetting (clipping, NaN, workspace box), message
conversions, and the policy node's tick logic (watchdog hold, e-stop, slow policy, dry run,
reconnect) against an in-memory transport; the deploy import path loads no simulator."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vla_kd.deploy import messages
from vla_kd.deploy.node import NodeSettings, PolicyNode
from vla_kd.deploy.safety import SafetyLimits, vet_action


# ------------------------------------------------------------------ safety
def test_steps_are_clipped_per_tick_and_the_gripper_to_its_range():
    limits = SafetyLimits(max_translation=0.02, max_rotation=0.05, gripper_range=(-0.5, 0.5))
    command = vet_action(np.array([1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.9]), limits, last_gripper=1.0)
    assert np.linalg.norm(command.linear) == pytest.approx(0.02)
    assert np.allclose(command.linear[:2], 0.02 / np.sqrt(2)) and command.linear[2] == 0
    assert np.linalg.norm(command.angular) == pytest.approx(0.05)
    assert command.gripper == 0.5 and {"clipped_step", "clipped_gripper"} <= set(command.flags)
    small = vet_action(np.array([0.1, 0, 0, 0, 0, 0, -0.2]), limits, 1.0)
    assert np.allclose(small.linear, [0.01, 0, 0]) and small.flags == []  # within limits: untouched


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_become_a_hold(bad):
    action = np.zeros(7)
    action[2] = bad
    command = vet_action(action, SafetyLimits(), last_gripper=-1.0)
    assert command.is_hold and command.gripper == -1.0 and command.flags == ["non_finite"]
    assert vet_action(np.zeros(5), SafetyLimits(), 1.0).flags == ["non_finite"]  # wrong size too


def test_the_workspace_box_stops_the_end_effector_at_its_wall():
    limits = SafetyLimits(workspace_low=(-0.5, -0.5, 0.0), workspace_high=(0.5, 0.5, 0.5))
    command = vet_action(np.array([0, 0, -1.0, 0, 0, 0, 1]), limits, 1.0, ee_position=np.array([0, 0, 0.005]))
    assert command.linear[2] == pytest.approx(-0.005) and "workspace" in command.flags
    outside = vet_action(np.zeros(7), limits, 1.0, ee_position=np.array([0, 0, -0.3]))
    assert 0 < outside.linear[2] <= limits.max_translation + 1e-12  # back in, one step at a time


# ------------------------------------------------------------------ messages
def test_image_round_trip_and_bgr():
    image = np.random.default_rng(0).integers(0, 255, size=(6, 8, 3), dtype=np.uint8)
    msg = messages.image_msg(image, stamp=12.5)
    assert np.array_equal(messages.image_from_msg(msg), image)
    assert messages.stamp_seconds(msg["header"]) == pytest.approx(12.5)
    bgr = dict(msg, encoding="bgr8")
    assert np.array_equal(messages.image_from_msg(bgr), image[..., ::-1])
    assert messages.image_from_msg(msg, size=4).shape == (4, 4, 3)
    with pytest.raises(ValueError, match="encoding"):
        messages.image_from_msg(dict(msg, encoding="mono16"))


def test_state_follows_the_configured_joint_order():
    msg = {"name": ["b", "a"], "position": [2.0, 1.0], "velocity": [20.0, 10.0]}
    assert messages.state_from_joint_state(msg, ["a", "b"]).tolist() == [1.0, 2.0]
    assert messages.state_from_joint_state(msg, ["a", "b"], velocities=True).tolist() == [1, 2, 10, 20]
    with pytest.raises(KeyError, match="c"):
        messages.state_from_joint_state(msg, ["a", "c"])


# ------------------------------------------------------------------ the node
class MemoryTransport:
    """Records publications; tests call the subscription callbacks directly."""

    def __init__(self):
        self.callbacks, self.sent, self.disconnect = {}, [], None

    def subscribe(self, topic, msg_type, callback):
        self.callbacks[topic] = callback

    def publisher(self, topic, msg_type):
        return lambda message: self.sent.append((topic, message))

    def on_disconnect(self, callback):
        self.disconnect = callback


class ConstantPolicy:
    def __init__(self, action, delay=0.0):
        self.action, self.delay, self.resets = np.asarray(action, dtype=np.float32), delay, 0

    def act(self, obs):
        import time

        time.sleep(self.delay)
        assert obs["state"].shape == (1, 2) and obs["instruction"] == ["push"]
        return self.action[None]

    def reset(self):
        self.resets += 1


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make_node(policy, **settings):
    transport, clock = MemoryTransport(), Clock()
    base = dict(joints=["j1", "j2"], image_topic=None, instruction="push", rate_hz=10.0)
    node = PolicyNode(policy, NodeSettings(**{**base, **settings}), SafetyLimits(), transport, clock=clock)
    return node, transport, clock


def joint_state(clock, stamp=None):
    t = clock.now if stamp is None else stamp
    return {"header": {"stamp": messages.stamp_of(t)}, "name": ["j1", "j2"], "position": [0.1, 0.2]}


def commands(transport):
    return [m for topic, m in transport.sent if topic == "/vla_kd/cmd"]


def test_node_waits_then_commands_then_holds_when_observations_go_stale():
    node, transport, clock = make_node(ConstantPolicy([0.1, 0, 0, 0, 0, 0, -1]))
    assert node.tick() == "waiting" and transport.sent == []  # nothing before the first observation
    transport.callbacks["/joint_states"](joint_state(clock))
    assert node.tick() == "command"
    sent = commands(transport)[-1]
    assert sent["twist"]["linear"]["x"] == pytest.approx(0.1 * 0.1 * 10)  # 1 cm per tick at 10 Hz
    assert sent["header"]["stamp"] == messages.stamp_of(1000.0)  # answers that observation
    assert transport.sent[-1] == ("/vla_kd/gripper", {"data": -1.0})
    clock.now += 0.6  # past max_observation_age
    assert node.tick() == "stale"
    assert commands(transport)[-1]["twist"]["linear"] == {"x": 0.0, "y": 0.0, "z": 0.0}
    assert transport.sent[-1] == ("/vla_kd/gripper", {"data": -1.0})  # the gripper holds too
    assert list(node.stats.timeline) == [(1000.0, "waiting"), (1000.0, "command"), (1000.6, "stale")]


def test_e_stop_holds_until_released_and_a_slow_policy_holds():
    node, transport, clock = make_node(ConstantPolicy([1, 0, 0, 0, 0, 0, 1]))
    transport.callbacks["/joint_states"](joint_state(clock))
    transport.callbacks["/estop"]({"data": True})
    assert [node.tick() for _ in range(3)] == ["estop"] * 3
    assert all(m["twist"]["linear"]["x"] == 0 for m in commands(transport))
    transport.callbacks["/estop"]({"data": False})
    assert node.tick() == "command" and commands(transport)[-1]["twist"]["linear"]["x"] > 0
    slow, transport, clock = make_node(
        ConstantPolicy([1, 0, 0, 0, 0, 0, 1], delay=0.05), max_policy_seconds=0.01
    )
    transport.callbacks["/joint_states"](joint_state(clock))
    assert slow.tick() == "slow" and commands(transport)[-1]["twist"]["linear"]["x"] == 0


def test_nan_from_the_policy_is_never_published():
    node, transport, clock = make_node(ConstantPolicy([np.nan, 0, 0, 0, 0, 0, 1]))
    transport.callbacks["/joint_states"](joint_state(clock))
    assert node.tick() == "command"
    sent = commands(transport)[-1]
    values = [*sent["twist"]["linear"].values(), *sent["twist"]["angular"].values()]
    assert np.isfinite(values).all() and not any(values) and node.stats.flags["non_finite"] == 1


def test_stale_images_are_rejected_on_arrival():
    node, transport, clock = make_node(ConstantPolicy(np.zeros(7)), image_topic="/cam")
    old = messages.image_msg(np.zeros((4, 4, 3), np.uint8), stamp=clock.now - 2.0)
    transport.callbacks["/cam"](old)
    transport.callbacks["/joint_states"](joint_state(clock))
    assert node.image is None and node.stats.rejected_images == 1
    assert node.tick() == "waiting"  # no usable image yet: nothing is published
    transport.callbacks["/cam"](messages.image_msg(np.zeros((4, 4, 3), np.uint8), stamp=clock.now))
    assert node.image is not None


class CameraRecordingPolicy(ConstantPolicy):
    def act(self, obs):
        self.seen = {k: v for k, v in obs.items() if k.endswith("rgb")}
        return super().act(obs)


def test_a_two_camera_node_waits_for_both_frames_passes_both_and_holds_when_one_is_stale():
    policy = CameraRecordingPolicy(np.zeros(7))
    node, transport, clock = make_node(policy, image_topic="/cam", wrist_image_topic="/wrist")
    transport.callbacks["/joint_states"](joint_state(clock))
    transport.callbacks["/cam"](messages.image_msg(np.zeros((4, 4, 3), np.uint8), stamp=clock.now))
    assert node.tick() == "waiting"  # no wrist frame yet: nothing is published
    wrist_stamp = clock.now - 0.1
    transport.callbacks["/wrist"](messages.image_msg(np.full((4, 4, 3), 7, np.uint8), stamp=wrist_stamp))
    assert node.tick() == "command"
    assert set(policy.seen) == {"rgb", "wrist_rgb"} and policy.seen["rgb"].shape == (1, 4, 4, 3)
    assert (policy.seen["rgb"] == 0).all() and (policy.seen["wrist_rgb"] == 7).all()
    assert commands(transport)[-1]["header"]["stamp"] == messages.stamp_of(wrist_stamp)  # the older frame
    clock.now += 0.45  # joint state and agent view refreshed; the wrist frame is now 0.55 s old
    transport.callbacks["/joint_states"](joint_state(clock))
    transport.callbacks["/cam"](messages.image_msg(np.zeros((4, 4, 3), np.uint8), stamp=clock.now))
    assert node.tick() == "stale"


def test_unusable_observations_hold_instead_of_crashing_the_loop():
    node, transport, clock = make_node(ConstantPolicy(np.zeros(7)), image_topic="/cam")
    transport.callbacks["/cam"](
        dict(messages.image_msg(np.zeros((4, 4, 3), np.uint8), clock.now), encoding="mono16")
    )
    assert node.stats.rejected_images == 1 and node.image is None
    transport.callbacks["/cam"](messages.image_msg(np.zeros((4, 4, 3), np.uint8), clock.now))
    transport.callbacks["/joint_states"]({"header": {}, "name": ["j1"], "position": [0.0]})  # j2 missing
    assert node.tick() == "bad_observation"
    assert commands(transport)[-1]["twist"]["linear"] == {"x": 0.0, "y": 0.0, "z": 0.0}


def test_after_a_disconnect_nothing_is_published_until_fresh_observations():
    policy = ConstantPolicy([1, 0, 0, 0, 0, 0, 1])
    node, transport, clock = make_node(policy)
    transport.callbacks["/joint_states"](joint_state(clock))
    assert node.tick() == "command"
    transport.disconnect()
    count = len(transport.sent)
    clock.now += 5.0
    assert [node.tick() for _ in range(3)] == ["waiting"] * 3 and len(transport.sent) == count
    assert policy.resets == 1 and node.stats.disconnects == 1  # reset once, on the control thread
    transport.callbacks["/joint_states"](joint_state(clock))
    assert node.tick() == "command"


def test_dry_run_publishes_nothing():
    node, transport, clock = make_node(ConstantPolicy([1, 0, 0, 0, 0, 0, 1]), dry_run=True)
    transport.callbacks["/joint_states"](joint_state(clock))
    assert node.tick() == "command" and transport.sent == [] and node.stats.published == 0


def test_joint_trajectory_mode_steps_from_the_current_joints():
    node, transport, clock = make_node(ConstantPolicy([1.0, -1.0, 0, 0, 0, 0, 0]), command="joint_trajectory")
    transport.callbacks["/joint_states"](joint_state(clock))
    node.tick()
    point = transport.sent[-1][1]["points"][0]
    assert point["positions"] == pytest.approx([0.1 + 0.05, 0.2 - 0.05])  # clipped to max_joint_step
    with pytest.raises(Exception, match="command"):
        NodeSettings(joints=["a"], command="teleport")


def test_the_deploy_path_imports_no_simulator():
    code = (
        "import sys, vla_kd.commands.deploy, vla_kd.deploy.node, vla_kd.deploy.bridge\n"
        "from vla_kd.policies.registry import POLICY_TYPES, policy_class\n"
        "for policy_type in POLICY_TYPES: policy_class(policy_type)\n"
        "bad = [m for m in ('mani_skill', 'sapien', 'libero', 'robosuite', 'mujoco') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_deploy_command_errors_are_one_line(tmp_path):
    from helpers import run_cli

    from vla_kd.policies.mlp_bc import ChunkedBCConfig, ChunkedBCPolicy

    ChunkedBCPolicy(ChunkedBCConfig(state_dim=2, horizon=1, use_image=False, hidden=8)).save_pretrained(
        tmp_path / "p"
    )
    common = ("deploy", f"policy={tmp_path / 'p'}", f"hydra.run.dir={tmp_path / 'run'}")
    proc = run_cli(*common, "state.joints=[a,b]", "ros.port=9", "ros.connect_timeout=2")
    assert proc.returncode != 0 and "no rosbridge server at 127.0.0.1:9" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli(*common)
    assert proc.returncode != 0 and "state.joints" in proc.stderr and "Traceback" not in proc.stderr
    from vla_kd.policies.action_expert import ActionExpertConfig, DiffusionActionExpert

    two_cameras = ActionExpertConfig(state_dim=2, horizon=2, image_size=64, features=8, hidden=16,
                                     cameras=("rgb", "wrist_rgb"))
    DiffusionActionExpert(two_cameras).save_pretrained(tmp_path / "wrist")
    proc = run_cli("deploy", f"policy={tmp_path / 'wrist'}", "state.joints=[a,b]",
                   f"hydra.run.dir={tmp_path / 'run_wrist'}")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "reads a wrist camera (wrist_rgb): set topics.wrist_image=" in proc.stderr
