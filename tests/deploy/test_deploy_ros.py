"""The deploy path against a real ROS 2 graph: a real rosbridge server (rosbridge-server-rs), a
real rclpy fake robot and the policy node over roslibpy, in a network namespace with loopback
only. A small learned reaching policy drives the robot toward its goal; the e-stop, the
watchdog and a bridge restart are exercised on the live graph."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

HAS_ROS = all(importlib.util.find_spec(m) for m in ("rclpy", "roslibpy", "rosbridge_server_rs"))


def can_unshare() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return (
        subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True).returncode
        == 0
    )


pytestmark = [
    pytest.mark.slow,
    pytest.mark.ros,
    pytest.mark.skipif(
        not HAS_ROS, reason="extra 'ros' (rclpy, roslibpy, rosbridge-server-rs) not installed"
    ),
    pytest.mark.skipif(
        HAS_ROS and not can_unshare(), reason="cannot create a network namespace (unshare -n)"
    ),
]


@pytest.fixture(scope="module")
def reaching_policy(tmp_path_factory):
    """A state-only policy fitted to reach the fake robot's goal (learned, then loaded from its
    folder like any saved policy)."""
    from vla_kd.deploy.fake_robot import fit_reaching_policy

    folder = tmp_path_factory.mktemp("deploy") / "reach"
    assert fit_reaching_policy(folder) < 0.01
    return folder


def run(policy_folder, scenario, tmp_path, duration=6.0) -> dict:
    from vla_kd.deploy.harness import isolated_command

    report = tmp_path / f"{scenario}.json"
    command = isolated_command(
        [
            sys.executable,
            "-m",
            "vla_kd.deploy.harness",
            "--policy",
            str(policy_folder),
            "--scenario",
            scenario,
            "--duration",
            str(duration),
            "--report",
            str(report),
        ]
    )
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and report.exists(), proc.stderr[-3000:]
    return json.loads(report.read_text())


def moving_between(report, start, end) -> list[dict]:
    return [c for c in report["robot"]["commands"] if start <= c["t"] <= end and c["moving"]]


def event(report, name) -> float:
    return next(t for t, n in report["events"] if n == name)


def test_the_policy_drives_the_robot_toward_its_goal(reaching_policy, tmp_path):
    from vla_kd.deploy.fake_robot import GOAL

    report = run(reaching_policy, "drive", tmp_path)
    start, final = np.array(report["robot"]["start"]), np.array(report["robot"]["final"])
    assert np.linalg.norm(final - GOAL) < 0.5 * np.linalg.norm(start - GOAL)
    assert report["outcomes"].get("command", 0) > 20 and report["published"] > 20
    latencies = [c["latency"] for c in report["robot"]["commands"]]
    assert 0 <= np.median(latencies) < 0.2  # observation -> command through the bridge
    assert report["flags"].get("clipped_step", 0) > 0  # far from the goal the steps are clipped


def test_e_stop_holds_the_robot_until_released(reaching_policy, tmp_path):
    report = run(reaching_policy, "estop", tmp_path)
    on, off = event(report, "estop_on"), event(report, "estop_off")
    assert report["outcomes"].get("estop", 0) >= 10
    assert moving_between(report, on + 0.3, off) == []  # in-flight commands aside, it stood still
    assert moving_between(report, off + 0.3, off + 10)  # and moved again after release


def test_the_watchdog_holds_when_observations_stop(reaching_policy, tmp_path):
    report = run(reaching_policy, "watchdog", tmp_path)
    on, off = event(report, "pause_on"), event(report, "pause_off")
    assert report["outcomes"].get("stale", 0) >= 5
    assert moving_between(report, on + 0.8, off) == []  # max_observation_age 0.5 s, plus slack
    assert moving_between(report, off + 0.5, off + 10)


def test_after_a_bridge_restart_nothing_is_published_until_observations_are_fresh(reaching_policy, tmp_path):
    report = run(reaching_policy, "restart", tmp_path, duration=9.0)
    stop, start = event(report, "server_stop"), event(report, "server_start")
    assert report["disconnects"] >= 1
    lost = next(t for t, outcome in report["timeline"] if t > stop and outcome == "waiting")
    after = [outcome for t, outcome in report["timeline"] if t >= lost]
    first_command = after.index("command")
    assert set(after[:first_command]) == {"waiting"}  # no holds, no commands, until fresh data
    assert moving_between(report, start, start + 10)  # the loop closed again through the new bridge
