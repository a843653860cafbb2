"""Closed-loop runs of the deploy path on one machine: a real rosbridge server, the fake robot
(a real rclpy node), and the policy node, with scripted events (e-stop, observation loss, a
bridge restart). Tests and ``scripts/bench_deploy.py`` run it inside a fresh network namespace
(``unshare -n``, loopback only) so no ROS traffic leaves the machine:

    python -m vla_kd.deploy.harness --policy P --scenario drive --report out.json
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from vla_kd.deploy.bridge import RosbridgeServer, RosbridgeTransport
from vla_kd.deploy.fake_robot import JOINTS
from vla_kd.deploy.node import NodeSettings, PolicyNode
from vla_kd.deploy.safety import SafetyLimits
from vla_kd.policies.pretrained import PretrainedPolicy

SCENARIOS = ("drive", "estop", "watchdog", "restart")


def isolated_command(args: list[str]) -> list[str]:
    """``args`` run in a new network namespace with only loopback up."""
    inner = " ".join(["ip link set lo up &&", "exec", *map(_quote, args)])
    return ["unshare", "-n", "sh", "-c", inner]


def _quote(text: str) -> str:

    return shlex.quote(text)


def run_scenario(
    policy_folder: str, scenario: str, duration: float, rate_hz: float, port: int = 9090, camera: bool = False
) -> dict:
    """One closed-loop run; returns the node's and the robot's records (times are ``time.time()``)."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    policy = PretrainedPolicy.from_pretrained(policy_folder)
    server = RosbridgeServer(port=port).start()
    robot_report = Path(tempfile.mkdtemp()) / "robot.json"
    robot = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vla_kd.deploy.fake_robot",
            # A cap only: the robot runs until the node is done and this run stops it. A lifetime
            # counted from the robot's own start let a slow first observation (a loaded machine)
            # eat the end of the scenario, after which no command could reach the robot.
            "--duration",
            str(duration + 120),
            "--rate-hz",
            str(rate_hz),
            "--report",
            str(robot_report),
            *(["--camera"] if camera else []),
        ]
    )
    # Should this run fail before it stops the robot, the robot must not outlive it by minutes.
    atexit.register(lambda: robot.poll() is None and robot.kill())
    events: list[tuple[float, str]] = []
    transport = RosbridgeTransport("127.0.0.1", port)
    settings = NodeSettings(
        joints=JOINTS,
        image_topic="/camera/image_raw" if camera else None,
        instruction_topic=None,
        rate_hz=rate_hz,
        image_size=getattr(policy.config, "image_size", None),
    )
    node = PolicyNode(policy, settings, SafetyLimits(), transport)
    estop = transport.publisher("/estop", "std_msgs/msg/Bool")
    pause = transport.publisher("/fake_robot/pause", "std_msgs/msg/Bool")
    wait_for_first_observation(node, timeout=60.0)
    # The robot's own subscriptions (pause) may still be matching through DDS discovery when its
    # first observation arrives, and a message published before they match is dropped.
    time.sleep(1.0)

    def script() -> None:
        def at(offset: float, name: str, action) -> None:
            time.sleep(max(0.0, start + offset - time.time()))
            events.append((time.time(), name))
            action()

        def pause_for(begin: float, end: float) -> None:
            # Sent again every 0.2 s, like a heartbeat, so one dropped message cannot lose the pause.
            at(begin, "pause_on", lambda: pause({"data": True}))
            while time.time() < start + end - 0.2:
                time.sleep(0.2)
                pause({"data": True})
            at(end, "pause_off", lambda: pause({"data": False}))
            for _ in range(3):
                time.sleep(0.1)
                pause({"data": False})

        if scenario == "estop":
            at(2.0, "estop_on", lambda: estop({"data": True}))
            at(4.0, "estop_off", lambda: estop({"data": False}))
        elif scenario == "watchdog":
            pause_for(2.0, 4.0)
        elif scenario == "restart":
            at(2.0, "server_stop", server.stop)
            at(3.5, "server_start", server.start)

    start = time.time()
    events.append((start, "start"))
    worker = threading.Thread(target=script, daemon=True)
    worker.start()
    stats = node.run(duration=duration)
    worker.join()
    transport.close()
    robot.terminate()  # the fake robot writes its report on SIGTERM
    robot.wait(timeout=30)
    server.stop()
    return {
        "scenario": scenario,
        "events": events,
        "timeline": list(stats.timeline),
        "outcomes": dict(stats.outcomes),
        "flags": dict(stats.flags),
        "published": stats.published,
        "disconnects": stats.disconnects,
        "achieved_hz": stats.achieved_hz,
        "robot": json.loads(robot_report.read_text()),
    }


def wait_for_first_observation(node, timeout: float) -> None:
    """Block until the node has heard the robot: a slow robot start must not eat the scenario."""
    deadline = time.time() + timeout
    while node.joint_state is None:
        if time.time() > deadline:
            raise TimeoutError(f"no observation from the robot within {timeout:.0f} s")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--scenario", choices=SCENARIOS, default="drive")
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rate-hz", type=float, default=10.0)
    parser.add_argument("--camera", action="store_true")
    parser.add_argument("--report", required=True)
    args = parser.parse_args()
    report = run_scenario(args.policy, args.scenario, args.duration, args.rate_hz, camera=args.camera)
    Path(args.report).write_text(json.dumps(report))
    os._exit(0)  # the twisted reactor thread of roslibpy does not always let the interpreter exit


if __name__ == "__main__":
    main()
