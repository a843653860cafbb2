"""Control rate and observation-to-command latency of `vla-kd deploy`'s node through a real
rosbridge server, against the rclpy fake robot, in a private network namespace.

Latency is measured by the robot: each command carries the stamp of the joint state it answers,
so ``arrival - stamp`` spans observation -> bridge -> node -> policy -> bridge -> robot.

    python scripts/bench_deploy.py --rates 10 30 100 --duration 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    from vla_kd.deploy.harness import isolated_command

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", help="a saved policy reading joints x, y, z, gripper (default: fit one)")
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 30.0, 100.0])
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    if args.policy is None:
        from vla_kd.deploy.fake_robot import fit_reaching_policy

        args.policy = str(Path(tempfile.mkdtemp()) / "reach")
        fit_reaching_policy(args.policy)
    rows = []
    for rate in args.rates:
        report_path = Path(tempfile.mkdtemp()) / "report.json"
        command = isolated_command(
            [
                sys.executable,
                "-m",
                "vla_kd.deploy.harness",
                "--policy",
                args.policy,
                "--scenario",
                "drive",
                "--duration",
                str(args.duration),
                "--rate-hz",
                str(rate),
                "--report",
                str(report_path),
            ]
        )
        subprocess.run(command, check=True, timeout=args.duration + 120)
        report = json.loads(report_path.read_text())
        latency = 1000 * np.array([c["latency"] for c in report["robot"]["commands"]])
        rows.append(
            {
                "target_hz": rate,
                "achieved_hz": report["achieved_hz"],
                "commands_received": len(latency),
                "latency_ms_median": float(np.median(latency)),
                "latency_ms_p90": float(np.percentile(latency, 90)),
                "latency_ms_max": float(latency.max()),
            }
        )
        print(json.dumps(rows[-1]))
    print("\n| target Hz | achieved Hz | commands | obs->command ms, median | p90 | max |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['target_hz']:.0f} | {r['achieved_hz']:.1f} | {r['commands_received']} "
            f"| {r['latency_ms_median']:.1f} | {r['latency_ms_p90']:.1f} | {r['latency_ms_max']:.1f} |"
        )


if __name__ == "__main__":
    main()
