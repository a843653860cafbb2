"""Conversions between rosbridge's JSON messages and the policy contract (no ROS imports:
rosbridge speaks JSON, and ``uint8[]`` fields arrive base64-encoded)."""

from __future__ import annotations

import base64

import numpy as np
from PIL import Image

from vla_kd.deploy.safety import SafeCommand

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}


def stamp_seconds(header: dict) -> float:
    stamp = header.get("stamp", {})
    return float(stamp.get("sec", 0)) + 1e-9 * float(stamp.get("nanosec", 0))


def stamp_of(seconds: float) -> dict:
    sec = int(seconds)
    return {"sec": sec, "nanosec": min(999_999_999, round((seconds - sec) * 1e9))}


def image_from_msg(msg: dict, size: int | None = None) -> np.ndarray:
    """A ``sensor_msgs/Image`` (rgb8/bgr8/rgba8/bgra8) as an ``(H, W, 3)`` RGB uint8 array,
    resized to ``size`` x ``size`` when given."""
    encoding = msg.get("encoding", "")
    if encoding not in CHANNELS:
        raise ValueError(f"unsupported image encoding '{encoding}' (use one of {sorted(CHANNELS)})")
    data = msg["data"]
    raw = base64.b64decode(data) if isinstance(data, str) else bytes(data)
    height, width, channels = int(msg["height"]), int(msg["width"]), CHANNELS[encoding]
    step = int(msg.get("step") or width * channels)
    rows = np.frombuffer(raw, dtype=np.uint8)[: height * step].reshape(height, step)
    image = rows[:, : width * channels].reshape(height, width, channels)[..., :3]
    if encoding.startswith("bgr"):
        image = image[..., ::-1]
    if size is not None and (height, width) != (size, size):

        image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.BILINEAR))
    return np.ascontiguousarray(image)


def image_msg(image: np.ndarray, stamp: float, frame_id: str = "camera") -> dict:
    """An ``(H, W, 3)`` uint8 RGB array as a ``sensor_msgs/Image`` for rosbridge."""
    height, width, _ = image.shape
    return {
        "header": {"stamp": stamp_of(stamp), "frame_id": frame_id},
        "height": height,
        "width": width,
        "encoding": "rgb8",
        "is_bigendian": 0,
        "step": width * 3,
        "data": base64.b64encode(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).decode("ascii"),
    }


def state_from_joint_state(msg: dict, joints: list[str], velocities: bool = False) -> np.ndarray:
    """Positions (then velocities) of ``joints``, in that order, from a ``sensor_msgs/JointState``."""
    index = {name: i for i, name in enumerate(msg.get("name", []))}
    missing = [j for j in joints if j not in index]
    if missing:
        raise KeyError(f"joint state lacks {missing}")
    values = [float(msg["position"][index[j]]) for j in joints]
    if velocities:
        speed = msg.get("velocity") or [0.0] * len(index)
        values += [float(speed[index[j]]) if index[j] < len(speed) else 0.0 for j in joints]
    return np.asarray(values, dtype=np.float32)


def twist(command: SafeCommand, rate_hz: float) -> dict:
    """The tick's end-effector delta as a velocity held for one tick (``geometry_msgs/Twist``)."""
    linear, angular = command.linear * rate_hz, command.angular * rate_hz
    return {
        "linear": dict(zip("xyz", map(float, linear), strict=True)),
        "angular": dict(zip("xyz", map(float, angular), strict=True)),
    }


def twist_stamped(command: SafeCommand, rate_hz: float, stamp: float, frame_id: str) -> dict:
    """``geometry_msgs/TwistStamped``; ``stamp`` is the observation the command answers, so the
    robot can measure observation-to-command latency."""
    return {"header": {"stamp": stamp_of(stamp), "frame_id": frame_id}, "twist": twist(command, rate_hz)}


def joint_trajectory(names: list[str], positions: np.ndarray, seconds_ahead: float) -> dict:
    """One-point ``trajectory_msgs/JointTrajectory`` reaching ``positions`` after ``seconds_ahead``."""
    sec = int(seconds_ahead)
    return {
        "joint_names": list(names),
        "points": [
            {
                "positions": [float(p) for p in positions],
                "time_from_start": {"sec": sec, "nanosec": int((seconds_ahead - sec) * 1e9)},
            }
        ],
    }
