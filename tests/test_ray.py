"""Ray, started here and stopped after: a local head on 127.0.0.1 with 2 CPUs runs a 2-job Hydra
sweep (hydra/launcher=ray) and an ``engine=ray`` evaluation whose episodes equal the local
``workers=2`` run's on the same seeds."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import PACKAGE_ROOT, requires_maniskill, run_cli

pytest.importorskip("ray", reason="the ray extra (scripts/setup.sh installs it)")
# one xdist worker runs this module (--dist loadgroup): one head at a time on the machine
pytestmark = pytest.mark.xdist_group("ray")

TIMING_FIELDS = ("policy_ms_per_action", "env_ms_per_step")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answering(port: int, head: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert head.poll() is None, head.stdout.read()[-3000:]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the Ray head did not answer on port {port} in {timeout_s} s")


@pytest.fixture(scope="module")
def ray_head():
    """``host:port`` of a Ray head on this machine (2 CPUs), stopped when the module ends.

    ``ray start --block`` stays in the foreground and takes down the processes it started when
    it is terminated, so only this head stops (``ray stop`` would stop every Ray on the machine).
    Token authentication is off for this 127.0.0.1-only head and its clients."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    # Ray's sockets live under its temp dir: a short one keeps their paths under the OS limit.
    temp_dir = tempfile.mkdtemp(prefix="ray")
    port = free_port()
    pythonpath = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    saved_auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # run_cli's commands inherit it
    env = dict(os.environ, PYTHONPATH=pythonpath)
    start = [ray_cli, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}",
             "--object-store-memory=200000000"]
    head = subprocess.Popen(start, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_until_answering(port, head)
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()
        try:
            head.wait(timeout=120)
        except subprocess.TimeoutExpired:
            head.kill()
        if saved_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved_auth
        shutil.rmtree(temp_dir, ignore_errors=True)


@requires_maniskill
@pytest.mark.maniskill
def test_ray_launcher_runs_a_two_job_sweep_on_the_cluster(tmp_path, ray_head):
    proc = run_cli(
        "eval", "-m", "hydra/launcher=ray", f"hydra.launcher.address={ray_head}",
        "hydra.launcher.cpus_per_job=1", "experiment=debug", "seed=0,50",
        f"hydra.sweep.dir={tmp_path}", timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/results.json"))]
    seeds = sorted(d["tasks"]["maniskill/PickCube-v1"]["protocol"]["seeds"][0] for d in docs)
    assert seeds == [0, 50]
    assert "Ray is launching 2 jobs" in proc.stdout + proc.stderr


def episodes_without_timing(results_json: Path) -> list[dict]:
    rows = json.loads(results_json.read_text())["episode_results"]
    return [{k: v for k, v in row.items() if k not in TIMING_FIELDS} for row in rows]


@requires_maniskill
@pytest.mark.maniskill
def test_engine_ray_evaluation_equals_the_local_workers_run(tmp_path, ray_head):
    common = ("eval", "env=maniskill/PushCube-v1", "policy=scripted", "obs_mode=state",
              "episodes_per_task=4", "seed=7", "max_episode_steps=40", "workers=2", "tracker=none",
              "progress=false")
    local = run_cli(*common, f"hydra.run.dir={tmp_path / 'local'}", timeout=600)
    assert local.returncode == 0, local.stderr[-3000:]
    on_ray = run_cli(*common, "engine=ray", f"ray_address={ray_head}", f"hydra.run.dir={tmp_path / 'ray'}",
                     timeout=600)
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    local_rows = episodes_without_timing(tmp_path / "local" / "results.json")
    ray_rows = episodes_without_timing(tmp_path / "ray" / "results.json")
    assert [r["seed"] for r in ray_rows] == [7, 8, 9, 10]
    assert ray_rows == local_rows  # every episode's success, return and length, bit for bit
    assert any(r["success_once"] for r in ray_rows)  # the scripted expert did something


def test_engine_ray_without_a_cluster_at_the_address_is_one_line(tmp_path):
    proc = run_cli("eval", "experiment=debug", "engine=ray", f"ray_address=127.0.0.1:{free_port()}",
                   f"hydra.run.dir={tmp_path}", timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "Ray cluster" in proc.stderr


@requires_maniskill
@pytest.mark.maniskill
def test_engine_ray_demonstrations_equal_the_local_recording(tmp_path, ray_head):
    import pyarrow.parquet as pq

    common = ("demos", "env=maniskill/PushCube-v1", "n=4", "image_size=32", "workers=2", "progress=false")
    tables = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        proc = run_cli(*common, f"engine={engine}", f"ray_address={ray_head}", f"output={out / 'dataset'}",
                       f"hydra.run.dir={out}", timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        tables[engine] = pq.read_table(out / "dataset" / "data" / "chunk-000" / "file-000.parquet")
    assert tables["ray"].num_rows > 0
    for column in ("episode_index", "observation.state", "action", "next.success"):
        assert tables["ray"][column].to_pylist() == tables["local"][column].to_pylist(), column
