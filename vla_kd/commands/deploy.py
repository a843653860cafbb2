"""``vla-kd deploy policy=<folder> ros.host=... ros.port=... rate_hz=... state.joints=[...]``:
drive a robot with a saved policy through rosbridge. Imports no simulator."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from vla_kd.cli_support import hydra_command
from vla_kd.config_checks import at_least, one_of, positive
from vla_kd.deploy.bridge import RosbridgeTransport
from vla_kd.deploy.node import COMMANDS, NodeSettings, PolicyNode
from vla_kd.deploy.safety import SafetyLimits
from vla_kd.errors import UserError
from vla_kd.policies.loading import policy_cameras
from vla_kd.policies.pretrained import PretrainedPolicy

CONFIG_NAME = "deploy"
log = logging.getLogger(__name__)


@dataclass
class RosSettings:
    host: str = "127.0.0.1"  # the rosbridge server (on the robot's computer or beside its ROS graph)
    port: int = 9090
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        at_least(self, 1, "port")
        positive(self, "connect_timeout")


@dataclass
class StateSettings:
    joints: list[str] = MISSING  # JointState names, in the order the policy's state vector expects
    include_velocities: bool = False


@dataclass
class TopicSettings:
    joint_states: str = "/joint_states"  # sensor_msgs/JointState
    image: str | None = "/camera/image_raw"  # sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8); null: no camera
    wrist_image: str | None = None  # sensor_msgs/Image of an eye-in-hand camera (policies reading wrist_rgb)
    instruction: str | None = "/instruction"  # std_msgs/String
    estop: str | None = "/estop"  # std_msgs/Bool: true holds until false
    ee_position: str | None = None  # geometry_msgs/PointStamped, enables the workspace box
    command: str = "/vla_kd/cmd"
    gripper: str | None = "/vla_kd/gripper"  # std_msgs/Float64 in [-1, 1] (-1 closes), twist modes only


@dataclass
class WatchdogSettings:
    max_observation_age: float = 0.5  # s since the last joint state / image stamp before holding
    max_image_age: float = 0.5  # s: older image stamps are rejected on arrival
    max_policy_seconds: float = 0.5  # a slower policy call publishes a hold instead of its late action

    def __post_init__(self) -> None:
        positive(self, "max_observation_age", "max_image_age", "max_policy_seconds")


@dataclass
class LimitSettings:
    max_translation: float = 0.02  # m per tick
    max_rotation: float = 0.1  # rad per tick
    gripper_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    workspace_low: list[float] | None = None  # [x, y, z] m, with topics.ee_position
    workspace_high: list[float] | None = None
    linear_scale: float = 0.1  # m per unit of the policy's xyz action
    angular_scale: float = 0.1  # rad per unit of its rpy action

    def __post_init__(self) -> None:
        positive(self, "max_translation", "max_rotation", "linear_scale", "angular_scale")


@dataclass
class JointTrajectorySettings:
    step_scale: float = 0.1  # rad per unit action, joint_trajectory mode
    max_step: float = 0.05  # rad per tick

    def __post_init__(self) -> None:
        positive(self, "step_scale", "max_step")


@dataclass
class DeployCommandConfig:
    """``configs/deploy.yaml``: run a saved policy against a robot through a rosbridge server
    (roslibpy client)."""

    policy: str = MISSING  # a saved policy folder (config.json + model.safetensors)
    ros: RosSettings = field(default_factory=RosSettings)
    rate_hz: float = 10.0  # commands per second (a chunked policy predicts every horizon-th tick)
    duration: float | None = None  # seconds to run (null: until interrupted)
    dry_run: bool = False  # log what would be published, publish nothing
    instruction: str = ""  # task instruction until one arrives on topics.instruction
    state: StateSettings = field(default_factory=StateSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    #: twist | twist_stamped (stamped with the observation it answers) | joint_trajectory
    command: str = "twist_stamped"
    frame_id: str = "base_link"
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    joint_trajectory: JointTrajectorySettings = field(default_factory=JointTrajectorySettings)

    def __post_init__(self) -> None:
        positive(self, "rate_hz", "duration")
        one_of(self, "command", COMMANDS)


ConfigStore.instance().store(name=f"{CONFIG_NAME}_schema", node=DeployCommandConfig)


def settings_from(cfg: DictConfig, image_size: int | None) -> tuple[NodeSettings, SafetyLimits]:
    """The node's settings and the safety limits from the composed config."""
    t, w, limits = cfg.topics, cfg.watchdog, OmegaConf.to_container(cfg.limits, resolve=True)
    settings = NodeSettings(
        joints=list(cfg.state.joints),
        include_velocities=bool(cfg.state.include_velocities),
        joint_state_topic=t.joint_states,
        image_topic=t.image,
        wrist_image_topic=t.get("wrist_image"),
        instruction_topic=t.instruction,
        estop_topic=t.estop,
        ee_position_topic=t.ee_position,
        command_topic=t.command,
        gripper_topic=t.gripper,
        command=cfg.command,
        frame_id=cfg.frame_id,
        image_size=image_size,
        instruction=cfg.instruction,
        rate_hz=float(cfg.rate_hz),
        max_observation_age=float(w.max_observation_age),
        max_image_age=float(w.max_image_age),
        max_policy_seconds=float(w.max_policy_seconds),
        dry_run=bool(cfg.dry_run),
        joint_step_scale=float(cfg.joint_trajectory.step_scale),
        max_joint_step=float(cfg.joint_trajectory.max_step),
    )
    for key in ("gripper_range", "workspace_low", "workspace_high"):
        limits[key] = tuple(limits[key]) if limits[key] is not None else None
    return settings, SafetyLimits(**limits)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    policy = PretrainedPolicy.from_pretrained(cfg.policy)
    settings, limits = settings_from(cfg, getattr(policy.config, "image_size", None))
    if "wrist_rgb" in policy_cameras(str(cfg.policy)) and not settings.wrist_image_topic:
        raise UserError(f"{cfg.policy} reads a wrist camera (wrist_rgb): set topics.wrist_image=<its "
                        "sensor_msgs/Image topic>")
    try:
        transport = RosbridgeTransport(
            cfg.ros.host, int(cfg.ros.port), timeout=float(cfg.ros.connect_timeout)
        )
    except Exception as err:  # roslibpy raises its own timeout types
        raise UserError(f"no rosbridge server at {cfg.ros.host}:{cfg.ros.port} ({err})") from None
    node = PolicyNode(policy, settings, limits, transport)
    log.info(
        "deploying %s at %.1f Hz%s", cfg.policy, settings.rate_hz, " (dry run)" if settings.dry_run else ""
    )
    try:
        stats = node.run(duration=cfg.duration)
    except KeyboardInterrupt:
        stats = node.stats
    finally:
        transport.close()
    summary = {
        "outcomes": dict(stats.outcomes),
        "flags": dict(stats.flags),
        "published": stats.published,
        "rejected_images": stats.rejected_images,
        "disconnects": stats.disconnects,
    }
    (run_dir / "deploy_summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


main = hydra_command(CONFIG_NAME, run)

if __name__ == "__main__":
    main()
