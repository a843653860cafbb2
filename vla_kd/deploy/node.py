"""The policy node: observations in from rosbridge, vetted commands out at a fixed rate.

Per tick, in order: an engaged e-stop publishes a hold; no fresh observations since (re)connect
publishes nothing; observations older than the watchdog's limit publish a hold; a policy call
slower than its budget publishes a hold instead of its late action; otherwise the action is
vetted (vla_kd.deploy.safety) and published. ``dry_run`` logs what it would publish and never
publishes. A lost bridge connection clears every observation and resets the policy, so after
the bridge returns nothing is published until fresh observations arrive.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from vla_kd.deploy import messages
from vla_kd.deploy.safety import SafeCommand, SafetyLimits, hold, vet_action
from vla_kd.errors import unknown_name

log = logging.getLogger(__name__)
COMMANDS = ("twist", "twist_stamped", "joint_trajectory")
TIMELINE_LENGTH = 100_000


@dataclass
class NodeSettings:
    """Topics, rates and watchdog limits (``configs/deploy.yaml`` documents each)."""

    joints: list[str]
    joint_state_topic: str = "/joint_states"
    image_topic: str | None = "/camera/image_raw"  # the agent view: observation key "rgb"
    wrist_image_topic: str | None = None  # an eye-in-hand camera: observation key "wrist_rgb"
    instruction_topic: str | None = "/instruction"
    estop_topic: str | None = "/estop"
    ee_position_topic: str | None = None  # geometry_msgs/PointStamped, for the workspace box
    command_topic: str = "/vla_kd/cmd"
    gripper_topic: str | None = "/vla_kd/gripper"
    command: str = "twist_stamped"
    frame_id: str = "base_link"
    include_velocities: bool = False
    image_size: int | None = None
    instruction: str = ""
    rate_hz: float = 10.0
    max_observation_age: float = 0.5  # seconds since the last joint state / image before holding
    max_image_age: float = 0.5  # images whose header stamp is older are rejected
    max_policy_seconds: float = 0.5
    dry_run: bool = False
    joint_step_scale: float = 0.1  # joint_trajectory: radians per unit action
    max_joint_step: float = 0.05

    def __post_init__(self) -> None:
        if self.command not in COMMANDS:

            raise unknown_name("command", self.command, COMMANDS)

    @property
    def camera_topics(self) -> dict[str, str]:
        """Observation key -> image topic, for each camera configured."""
        pairs = (("rgb", self.image_topic), ("wrist_rgb", self.wrist_image_topic))
        return {camera: topic for camera, topic in pairs if topic}


@dataclass
class Observed:
    value: object
    stamp: float  # the message's own time (header stamp, else when it arrived)
    received: float


@dataclass
class NodeStats:
    """Counters of a running node, and its most recent ticks as (clock time, outcome)."""

    outcomes: Counter = field(default_factory=Counter)
    flags: Counter = field(default_factory=Counter)
    rejected_images: int = 0
    disconnects: int = 0
    published: int = 0
    # bounded: a node may run for days
    timeline: deque = field(default_factory=lambda: deque(maxlen=TIMELINE_LENGTH))

    @property
    def achieved_hz(self) -> float:
        """Ticks per second over the kept timeline."""
        if len(self.timeline) < 2:
            return 0.0
        return (len(self.timeline) - 1) / (self.timeline[-1][0] - self.timeline[0][0])


class PolicyNode:
    """Runs ``policy`` (the suite's Policy contract) against a rosbridge ``transport``."""

    def __init__(
        self, policy, settings: NodeSettings, limits: SafetyLimits, transport, clock=time.time
    ) -> None:
        self.policy, self.settings, self.limits = policy, settings, limits
        self.transport, self.clock = transport, clock
        self.stats = NodeStats()
        self._lock = threading.Lock()
        self.joint_state: Observed | None = None
        self.images: dict[str, Observed] = {}  # the latest frame of each camera, by observation key
        self.ee_position: np.ndarray | None = None
        self.instruction = settings.instruction
        self.estopped = False
        self.last_gripper = 1.0  # open until told otherwise
        self._reset_policy = False
        s = settings
        transport.subscribe(s.joint_state_topic, "sensor_msgs/msg/JointState", self.on_joint_state)
        for camera, topic in s.camera_topics.items():
            transport.subscribe(topic, "sensor_msgs/msg/Image", partial(self.on_image, camera=camera))
        if s.instruction_topic:
            transport.subscribe(s.instruction_topic, "std_msgs/msg/String", self.on_instruction)
        if s.estop_topic:
            transport.subscribe(s.estop_topic, "std_msgs/msg/Bool", self.on_estop)
        if s.ee_position_topic:
            transport.subscribe(s.ee_position_topic, "geometry_msgs/msg/PointStamped", self.on_ee_position)
        command_type = {
            "twist": "geometry_msgs/msg/Twist",
            "twist_stamped": "geometry_msgs/msg/TwistStamped",
            "joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
        }[s.command]
        self._publish_command = transport.publisher(s.command_topic, command_type)
        self._publish_gripper = (
            transport.publisher(s.gripper_topic, "std_msgs/msg/Float64")
            if s.gripper_topic and s.command != "joint_trajectory"
            else None
        )
        transport.on_disconnect(self.on_disconnect)

    # ------------------------------------------------------------- inputs
    def on_joint_state(self, msg: dict) -> None:
        now = self.clock()
        stamp = messages.stamp_seconds(msg.get("header", {})) or now
        with self._lock:
            self.joint_state = Observed(msg, stamp, now)

    @property
    def image(self) -> Observed | None:
        """The agent view's latest frame (None before the first)."""
        return self.images.get("rgb")

    def on_image(self, msg: dict, camera: str = "rgb") -> None:
        now = self.clock()
        stamp = messages.stamp_seconds(msg.get("header", {}))
        if now - stamp > self.settings.max_image_age:
            self.stats.rejected_images += 1  # a stale frame must never drive the robot
            return
        try:
            image = messages.image_from_msg(msg, self.settings.image_size)
        except (ValueError, KeyError) as err:
            self.stats.rejected_images += 1
            log.warning("image rejected: %s", err)
            return
        with self._lock:
            self.images[camera] = Observed(image, stamp, now)

    def on_instruction(self, msg: dict) -> None:
        self.instruction = str(msg.get("data", ""))

    def on_estop(self, msg: dict) -> None:
        engaged = bool(msg.get("data", False))
        if engaged and not self.estopped:
            log.warning("e-stop engaged: holding")
        self.estopped = engaged

    def on_ee_position(self, msg: dict) -> None:
        point = msg.get("point", {})
        self.ee_position = np.array([point.get("x", 0.0), point.get("y", 0.0), point.get("z", 0.0)])

    def on_disconnect(self, *_) -> None:
        with self._lock:
            self.joint_state, self.images, self.ee_position = None, {}, None
        self.stats.disconnects += 1
        self._reset_policy = True  # done on the control thread: a policy is not thread-safe
        log.warning("bridge connection lost: publishing nothing until fresh observations arrive")

    # ------------------------------------------------------------- the tick
    def tick(self) -> str:
        """One control step; returns its outcome (also counted in ``stats.outcomes``)."""
        started = self.clock()
        outcome = self._tick()
        self.stats.outcomes[outcome] += 1
        self.stats.timeline.append((started, outcome))
        return outcome

    def _tick(self) -> str:
        s, now = self.settings, self.clock()
        if self._reset_policy and hasattr(self.policy, "reset"):
            self.policy.reset()  # no half-executed chunk survives a lost connection
        self._reset_policy = False
        with self._lock:
            joint_state, images = self.joint_state, dict(self.images)
        have_all = joint_state is not None and images.keys() >= s.camera_topics.keys()
        if self.estopped:
            return self._send_hold(joint_state, "estop", now)
        if not have_all:
            return "waiting"  # nothing since (re)connect: publish nothing at all
        age = max([now - joint_state.received, *(now - image.stamp for image in images.values())])
        if age > s.max_observation_age:
            log.warning("observations %.2f s old: holding", age)
            return self._send_hold(joint_state, "stale", now)
        try:
            state = messages.state_from_joint_state(joint_state.value, s.joints, s.include_velocities)
        except (KeyError, IndexError, TypeError) as err:
            log.warning("joint state unusable (%s): holding", err)
            return self._send_hold(None, "bad_observation", now)
        obs = {"state": state[None], "instruction": [self.instruction]}
        obs.update({camera: image.value[None] for camera, image in images.items()})
        started = time.perf_counter()
        action = np.asarray(self.policy.act(obs))[0]
        if time.perf_counter() - started > s.max_policy_seconds:
            log.warning("policy took longer than %.2f s: holding", s.max_policy_seconds)
            return self._send_hold(joint_state, "slow", now)
        stamp = min([joint_state.stamp, *(image.stamp for image in images.values())])
        if s.command == "joint_trajectory":
            return self._send_joint_targets(joint_state, action)
        command = vet_action(action, self.limits, self.last_gripper, self.ee_position)
        self.stats.flags.update(command.flags)
        return self._send(command, stamp, "command")

    def _send_hold(self, joint_state: Observed | None, outcome: str, now: float) -> str:
        if self.settings.command == "joint_trajectory":
            if joint_state is not None:
                positions = messages.state_from_joint_state(joint_state.value, self.settings.joints)
                self._publish(
                    messages.joint_trajectory(self.settings.joints, positions, 1 / self.settings.rate_hz)
                )
            return outcome
        return self._send(hold(self.last_gripper), now, outcome)

    def _send(self, command: SafeCommand, stamp: float, outcome: str) -> str:
        s = self.settings
        if s.command == "twist":
            message = messages.twist(command, s.rate_hz)
        else:
            message = messages.twist_stamped(command, s.rate_hz, stamp, s.frame_id)
        self._publish(message)
        if self._publish_gripper is not None:
            self._publish(None, gripper=command.gripper)
        self.last_gripper = command.gripper
        return outcome

    def _send_joint_targets(self, joint_state: Observed, action: np.ndarray) -> str:
        s = self.settings
        current = messages.state_from_joint_state(joint_state.value, s.joints)
        steps = np.asarray(action[: len(current)], dtype=np.float64) * s.joint_step_scale
        if not np.isfinite(steps).all():
            self.stats.flags["non_finite"] += 1
            steps = np.zeros_like(steps)
        steps = np.clip(steps, -s.max_joint_step, s.max_joint_step)
        self._publish(messages.joint_trajectory(s.joints, current + steps, 1 / s.rate_hz))
        return "command"

    def _publish(self, message: dict | None, gripper: float | None = None) -> None:
        if self.settings.dry_run:
            log.info("dry run: would publish %s", message if gripper is None else {"gripper": gripper})
            return
        if gripper is not None:
            self._publish_gripper({"data": float(gripper)})
        else:
            self._publish_command(message)
            self.stats.published += 1

    # ------------------------------------------------------------- the loop
    def run(self, duration: float | None = None, stop: threading.Event | None = None) -> NodeStats:
        """Tick at ``rate_hz`` (on a fixed schedule, not sleep-after-work) until ``duration``
        seconds pass or ``stop`` is set."""
        period = 1.0 / self.settings.rate_hz
        start = time.perf_counter()
        next_tick = start
        while (duration is None or time.perf_counter() - start < duration) and not (stop and stop.is_set()):
            self.tick()
            next_tick += period
            delay = next_tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_tick = time.perf_counter()  # overran: do not try to catch up in a burst
        return self.stats
