"""A fake robot on a real ROS 2 graph (rclpy), for testing and benchmarking the deploy path.

A point end effector with a gripper: it publishes ``sensor_msgs/JointState`` (joints x, y, z,
gripper) and, optionally, a small ``sensor_msgs/Image`` showing where it is; it integrates each
``geometry_msgs/TwistStamped`` command for one control period, takes ``std_msgs/Float64``
gripper commands, and measures observation-to-command latency from each command's stamp (the
observation it answers). ``/fake_robot/pause`` (``std_msgs/Bool``) stops its observations, to
exercise a watchdog. On exit it writes a JSON report.

    python -m vla_kd.deploy.fake_robot --duration 8 --report robot.json
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time

import numpy as np
import torch

from vla_kd.policies.mlp_bc import ChunkedBCConfig, ChunkedBCPolicy

JOINTS = ["x", "y", "z", "gripper"]
GOAL = (0.0, 0.1, 0.25)


def fit_reaching_policy(folder, goal=GOAL, steps: int = 600, seed: int = 0):
    """A state-only chunked-BC policy for this robot (state: its joints x, y, z, gripper),
    fitted in seconds to step toward ``goal`` from anywhere in its box, saved to ``folder``
    like any trained policy. Returns the final fitting loss."""


    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: extra threads only contend
    rng = np.random.default_rng(seed)
    n = 4096
    states = np.concatenate(
        [rng.uniform([-0.5, -0.5, 0.0], [0.5, 0.5, 0.4], size=(n, 3)), rng.choice([-1.0, 1.0], size=(n, 1))],
        axis=1,
    ).astype(np.float32)
    actions = np.zeros((n, 7), np.float32)
    actions[:, :3] = np.clip((np.asarray(goal) - states[:, :3]) * 10, -1, 1)
    actions[:, 6] = 1.0  # keep the gripper open
    policy = ChunkedBCPolicy(ChunkedBCConfig(state_dim=4, horizon=1, use_image=False, hidden=64))
    policy.set_normalization(
        {"mean": states.mean(0), "std": states.std(0)},
        {"min": -np.ones(7, np.float32), "max": np.ones(7, np.float32)},
    )
    optimiser = torch.optim.Adam(policy.parameters(), lr=3e-3)
    x, y = torch.as_tensor(states), policy.action_norm.normalize(torch.as_tensor(actions))
    for _ in range(steps):
        batch = torch.randint(0, n, (256,))
        loss = ((policy(x[batch])[:, 0] - y[batch]) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    torch.set_num_threads(threads)
    policy.eval().save_pretrained(folder)
    return float(loss.detach())


def render(position: np.ndarray, size: int = 32) -> np.ndarray:
    """A dark square with a bright dot at the end effector's (x, y) in [-0.5, 0.5] m."""
    image = np.zeros((size, size, 3), np.uint8)
    col, row = (np.clip(position[:2] + 0.5, 0, 1) * (size - 1)).astype(int)
    image[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2] = 255
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--start", type=float, nargs=3, default=[0.3, -0.2, 0.1])
    parser.add_argument(
        "--rate-hz", type=float, default=10.0, help="the controller's rate (integration step)"
    )
    parser.add_argument("--state-hz", type=float, default=50.0)
    parser.add_argument("--camera", action="store_true")
    parser.add_argument("--report", required=True)
    args = parser.parse_args()

    import rclpy  # optional: ROS 2 (the rosgraph extra)
    from geometry_msgs.msg import TwistStamped  # optional: ROS 2 (the rosgraph extra)
    from rclpy.node import Node  # optional: ROS 2 (the rosgraph extra)
    from rclpy.signals import SignalHandlerOptions  # optional: ROS 2 (the rosgraph extra)
    from sensor_msgs.msg import Image, JointState  # optional: ROS 2 (the rosgraph extra)
    from std_msgs.msg import Bool, Float64  # optional: ROS 2 (the rosgraph extra)

    # rclpy's own handlers would shut the context down on SIGTERM mid-spin; this robot stops
    # its loop and writes its report instead (see below).
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node("fake_robot")
    position, gripper = np.array(args.start, dtype=float), 1.0
    paused = [False]
    commands: list[dict] = []
    state_pub = node.create_publisher(JointState, "/joint_states", 10)
    image_pub = node.create_publisher(Image, "/camera/image_raw", 10)

    def now() -> float:
        return time.time()

    def on_command(msg: TwistStamped) -> None:
        nonlocal position
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        velocity = np.array([msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z])
        position = position + velocity / args.rate_hz
        commands.append(
            {
                "t": now(),
                "latency": now() - stamp,
                "moving": bool(np.abs(velocity).max() > 0),
                "position": position.tolist(),
            }
        )

    def on_gripper(msg: Float64) -> None:
        nonlocal gripper
        gripper = float(np.clip(msg.data, -1, 1))

    node.create_subscription(TwistStamped, "/vla_kd/cmd", on_command, 10)
    node.create_subscription(Float64, "/vla_kd/gripper", on_gripper, 10)
    node.create_subscription(Bool, "/fake_robot/pause", lambda m: paused.__setitem__(0, bool(m.data)), 10)

    def publish_state() -> None:
        if paused[0]:
            return
        msg = JointState()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.name = JOINTS
        msg.position = [*map(float, position), gripper]
        state_pub.publish(msg)

    def publish_image() -> None:
        if paused[0]:
            return
        frame = render(position)
        msg = Image()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.height, msg.width, msg.encoding, msg.step = (
            frame.shape[0],
            frame.shape[1],
            "rgb8",
            frame.shape[1] * 3,
        )
        msg.data = frame.tobytes()
        image_pub.publish(msg)

    node.create_timer(1.0 / args.state_hz, publish_state)
    if args.camera:
        node.create_timer(0.05, publish_image)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # the harness ends the run this way
    start = now()
    while now() - start < args.duration and not stop.is_set():
        rclpy.spin_once(node, timeout_sec=0.01)
    report = {
        "start": args.start,
        "final": position.tolist(),
        "gripper": gripper,
        "commands": commands,
        "t0": start,
    }
    with open(args.report, "w") as f:
        json.dump(report, f)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
