"""``vla-kd deploy policy=<folder> ros.host=... ros.port=... rate_hz=... state.joints=[...]``:
drive a robot with a saved policy through rosbridge. Imports no simulator."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vla_kd.cli_support import hydra_command
from vla_kd.errors import UserError

CONFIG_NAME = "deploy"
log = logging.getLogger(__name__)


def settings_from(cfg: DictConfig, image_size: int | None):
    from vla_kd.deploy.node import NodeSettings
    from vla_kd.deploy.safety import SafetyLimits

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
    limits["gripper_range"] = tuple(limits["gripper_range"])
    return settings, SafetyLimits(**limits)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    from vla_kd.deploy.bridge import RosbridgeTransport
    from vla_kd.deploy.node import PolicyNode
    from vla_kd.policies.pretrained import PretrainedPolicy
    from vla_kd.policies.registry import policy_cameras

    if float(cfg.rate_hz) <= 0:
        raise UserError(f"rate_hz must be positive, got {cfg.rate_hz}")
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
