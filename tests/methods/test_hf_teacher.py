"""Every distillation method takes a Hugging Face VLM (``hf_vla``) as its teacher, through the same
``vla-kd train method=<name> teacher=<folder>`` as with the TokenVLA: a few steps each."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import requires_maniskill, run_cli

from vla_kd.data.lerobot_dataset import LeRobotDataset
from vla_kd.methods.ceed import CEEDConfig, jacobi_student
from vla_kd.nn.jacobi import jacobi_decode
from vla_kd.nn.layer_skip import INCREMENTAL, INFORMATIVE
from vla_kd.policies.action_expert import ActionExpertConfig, DiffusionActionExpert
from vla_kd.policies.aligned_vla import AlignedVLA
from vla_kd.policies.hf_vla import HFVLA, HFVLAConfig
from vla_kd.policies.pretrained import PretrainedPolicy
from vla_kd.policies.skip_vla import SkipHFVLA, skip_student
from vla_kd.policies.vlm_maker import VLMSpec, make_vlm

SIZES = dict(image_size=64, hidden=64, vision_hidden=64, heads=2, kv_heads=1, vision_heads=2, layers=3)
COMMON = ("trainer=debug", "trainer.progress=false", "tracker=none")


def saved_teacher(root, dataset: LeRobotDataset, architecture: str = "idefics3"):
    """A randomly initialised hf_vla teacher for ``dataset``, saved under ``root``."""
    vlm = make_vlm(root / f"{architecture}_vlm", VLMSpec(architecture=architecture, **SIZES))
    state_dim = dataset.states.shape[1]
    teacher = HFVLA.from_checkpoint(vlm, HFVLAConfig(state_dim=state_dim, horizon=2, image_size=64))
    teacher.set_normalization(dataset.feature_stats("observation.state"), dataset.actions, dataset.states)
    # As in a trained model, each token should depend on the ones before it: sharper logits,
    # through the final norm (PaliGemma ties its output layer to the input embeddings).
    norm = teacher.layer_container.norm
    with torch.no_grad():
        if "Gemma" in type(norm).__name__:
            norm.weight.fill_(29.0)  # Gemma's norm scales by 1 + weight
        else:
            norm.weight.mul_(30.0)
    return teacher.save_pretrained(root / f"{architecture}_teacher")


@pytest.fixture(scope="module")
def dataset_and_teacher(tiny_datasets, tmp_path_factory):
    dataset = LeRobotDataset(tiny_datasets(image_size=64), action_horizon=2)
    return dataset, saved_teacher(tmp_path_factory.mktemp("hf_teacher"), dataset)


@pytest.fixture(scope="module")
def paligemma_teacher(dataset_and_teacher, tmp_path_factory):
    dataset, _ = dataset_and_teacher
    return saved_teacher(tmp_path_factory.mktemp("hf_teacher_pg"), dataset, "paligemma")


def batch_of(dataset, rows, texts=None):
    batch = torch.utils.data.default_collate([dataset[i] for i in rows])
    tasks = texts or list(batch["task"])
    return batch["observation.images.rgb"], batch["observation.state"], tasks


def test_ceed_student_is_a_jacobi_copy_of_the_hf_teacher(dataset_and_teacher):
    dataset, folder = dataset_and_teacher
    teacher = HFVLA.from_pretrained(folder)
    student = jacobi_student(teacher, CEEDConfig(exit_max_bin_change=None))
    assert isinstance(student, HFVLA) and student.config.decoding == "jacobi"
    assert all(p.requires_grad for p in student.parameters())
    batch = torch.utils.data.default_collate([dataset[i] for i in range(3)])
    rgb, state, tasks = student.camera_input(batch), batch["observation.state"], list(batch["task"])
    greedy = teacher.generate_tokens(rgb, state, tasks)
    assert torch.equal(student.eval().decode_tokens(rgb, state, tasks), greedy)
    assert jacobi_decode(teacher, rgb, state, tasks).iterations > 1


def test_method_ceed_with_an_hf_teacher(dataset_and_teacher, tmp_path):
    dataset, teacher = dataset_and_teacher
    proc = run_cli(
        "train",
        "method=ceed",
        f"teacher={teacher}",
        f"dataset={dataset.root}",
        *COMMON,
        f"output={tmp_path / 'student'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["model"] == "hf_vla" and summary["steps"] == 4 and summary["jacobi_trajectories"] > 0
    saved = json.loads((tmp_path / "student" / "config.json").read_text())
    assert saved["policy_type"] == "hf_vla" and saved["config"]["decoding"] == "jacobi"
    student = HFVLA.from_pretrained(tmp_path / "student")
    obs = {
        "rgb": np.zeros((2, 64, 64, 3), np.uint8),
        "state": np.zeros((2, 5), np.float32),
        "instruction": ["push the cube"] * 2,
    }
    assert student.act(obs).shape == (2, 7)


@requires_maniskill
def test_method_rpd_with_an_hf_teacher(pushcube_demos, tmp_path):
    teacher = saved_teacher(tmp_path, LeRobotDataset(pushcube_demos, action_horizon=2))
    proc = run_cli(
        "train",
        "method=rpd",
        f"teacher={teacher}",
        "env=maniskill/PushCube-v1",
        "tracker=none",
        "method.num_envs=1",
        "method.progress=false",
        "method.total_timesteps=64",
        "method.ppo.n_steps=64",
        "method.ppo.batch_size=32",
        "method.ppo.n_epochs=1",
        "method.validation.every=0",
        "eval.episodes=1",
        "eval.workers=1",
        "eval.max_episode_steps=5",
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["env_steps"] == 64 and summary["eval/episodes"] == 1


@requires_maniskill
def test_method_opd_with_an_hf_teacher_and_a_token_student(pushcube_demos, tmp_path):
    # A fresh TokenVLA student takes the hf teacher's bins and learns the reverse KL along its
    # own sampled tokens on the states it reached.
    teacher = saved_teacher(tmp_path, LeRobotDataset(pushcube_demos, action_horizon=2))
    proc = run_cli(
        "train",
        "method=opd",
        f"teacher={teacher}",
        "env=maniskill/PushCube-v1",
        f"dataset={pushcube_demos}",
        "model=token_vla_tiny",
        "model.horizon=2",
        "model.aux_privileged_weight=0",
        "method.rounds=2",
        "method.episodes_per_round=1",
        "method.max_episode_steps=6",
        "method.demo_steps=2",
        "method.steps_per_round=2",
        "method.validation_episodes=1",
        "method.workers=1",
        *COMMON,
        "eval.episodes=1",
        "eval.workers=1",
        "eval.max_episode_steps=4",
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rounds = json.loads((tmp_path / "run" / "rounds.json").read_text())
    assert [r["decisions"] for r in rounds] == [3, 3]  # 6 steps, 2 actions per decision
    assert "losses/token_reverse_kl" in rounds[-1] and "train/student_token_entropy" in rounds[-1]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["student"] == "token_vla" and summary["eval/episodes"] == 1


def skip_student_of(folder, **fields):
    teacher = PretrainedPolicy.from_pretrained(folder)
    roles = [INFORMATIVE, INCREMENTAL, INFORMATIVE]
    student = skip_student(teacher, layer_roles=roles, adapter_rank=4, **fields).eval()
    with torch.no_grad():  # trained adapters are not the identity
        for adapter in student.adapters.values():
            adapter.up.weight.normal_(0, 0.5)
    return teacher, student


@pytest.mark.parametrize("architecture", ["idefics3", "paligemma"])
def test_dysl_student_of_an_hf_teacher_skips_its_decoder_layers(
    dataset_and_teacher, paligemma_teacher, architecture
):
    dataset, idefics3 = dataset_and_teacher
    teacher, student = skip_student_of(
        idefics3 if architecture == "idefics3" else paligemma_teacher,
        prior_threshold=10.0,
        post_threshold=10.0,
    )
    assert isinstance(student, SkipHFVLA) and len(student.adapters) == 1
    # Rows of different prompt lengths: the left padding must survive row selection.
    rgb, state, texts = batch_of(dataset, [0, 1, 2, 3], ["push the cube", "push", "push the cube", "go"])
    student.config.skipping = "off"
    full, paths = student.decode_with_guidance(rgb, state, texts)
    assert set(paths) == {"full"} and torch.equal(full, teacher.generate_tokens(rgb, state, texts))
    student.config.skipping = "always"
    cheap, paths = student.decode_with_guidance(rgb, state, texts)
    assert set(paths) == {"skip"} and not torch.equal(cheap, full)
    assert torch.equal(student.skip_logits(rgb, state, texts, cheap).argmax(-1), cheap)
    # guided: rows 1 and 3 are critical (a gripper flip in their history) and run at full depth
    student.config.skipping = "guided"
    first = student.tokens_to_actions(cheap)[:, 0]
    history = np.zeros((4, 4, 7), np.float32)
    history[..., 6] = np.where(first[:, 6:7] >= 0, 1.0, -1.0)
    history[[1, 3], 2, 6] *= -1.0
    tokens, paths = student.decode_with_guidance(rgb, state, texts, history, np.ones(4, bool))
    assert paths == ["skip", "full", "skip", "full"]
    assert torch.equal(tokens[[0, 2]], cheap[[0, 2]]) and torch.equal(tokens[[1, 3]], full[[1, 3]])
    assert student.trunk_flops("skip") < student.trunk_flops("full")


def test_method_dysl_with_an_hf_teacher(dataset_and_teacher, tmp_path):
    dataset, teacher = dataset_and_teacher
    proc = run_cli(
        "train",
        "method=dysl",
        f"teacher={teacher}",
        f"dataset={dataset.root}",
        *COMMON,
        "method.stage1_steps=2",
        "method.stage2_steps=2",
        "method.importance_frames=8",
        "method.history=2",
        f"output={tmp_path / 'student'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["model"] == "skip_hf_vla" and summary["steps"] == 4
    assert summary["layer_roles"][0] == INFORMATIVE and summary["layer_roles"].count(INFORMATIVE) == 2
    student = PretrainedPolicy.from_pretrained(tmp_path / "student")
    assert isinstance(student, SkipHFVLA) and student.roles == summary["layer_roles"]
    obs = {
        "rgb": np.zeros((2, 64, 64, 3), np.uint8),
        "state": np.zeros((2, 5), np.float32),
        "instruction": ["push the cube"] * 2,
    }
    assert student.act(obs).shape == (2, 7)


def saved_expert(root, dataset):
    expert = DiffusionActionExpert(
        ActionExpertConfig(
            state_dim=5,
            horizon=2,
            image_size=64,
            features=16,
            hidden=32,
            train_timesteps=20,
            inference_steps=4,
        )
    )
    expert.set_normalization(dataset.feature_stats("observation.state"), dataset.feature_stats("action"))
    return expert.save_pretrained(root / "expert")


def test_aligned_student_reads_the_hf_vlm_after_its_prompt(dataset_and_teacher, tmp_path):
    dataset, folder = dataset_and_teacher
    vlm = HFVLA.from_pretrained(folder)
    expert = PretrainedPolicy.from_pretrained(saved_expert(tmp_path, dataset))
    student = AlignedVLA.from_parts(vlm, expert, action_tokens=2).eval()
    assert student.config.vlm_type == "hf_vla" and student.vlm is not vlm
    rgb, state, texts = batch_of(dataset, [0, 1, 2], ["push the cube", "push", "push the cube"])
    # The cached two-part forward equals one forward over prompt + extra embeddings of a single row.
    extra = torch.randn(3, 3, vlm.trunk_shape.hidden)
    hidden = vlm.hidden_after_prompt(rgb, state, texts, extra)
    assert hidden.shape == (3, 3, vlm.trunk_shape.hidden)
    alone = vlm.hidden_after_prompt(rgb[1:2], state[1:2], texts[1:2], extra[1:2])
    torch.testing.assert_close(alone[0], hidden[1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(hidden[0], vlm.hidden_after_prompt(255 - rgb, state, texts, extra)[0])
    student.save_pretrained(tmp_path / "aligned")
    assert (tmp_path / "aligned" / "vlm" / "vlm" / "config.json").is_file()
    loaded = PretrainedPolicy.from_pretrained(tmp_path / "aligned")
    assert isinstance(loaded, AlignedVLA) and isinstance(loaded.vlm, HFVLA)
    for name, value in student.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    obs = {"rgb": rgb.numpy(), "state": state.numpy(), "instruction": texts}
    np.testing.assert_array_equal(loaded.predict_action_chunk(obs), student.predict_action_chunk(obs))


def test_method_align_with_an_hf_teacher(dataset_and_teacher, tmp_path):
    dataset, teacher = dataset_and_teacher
    common = (
        "train",
        "method=align",
        f"teacher={teacher}",
        f"expert={saved_expert(tmp_path, dataset)}",
        f"dataset={dataset.root}",
        "tracker=none",
        "trainer.progress=false",
        "trainer.batch_size=4",
        "method.stage1_steps=2",
        "method.stage2_steps=2",
        "method.mapper_hidden=16",
        "method.top_layers=1",
        "method.stage2_parts=[mapper,vision]",
    )
    for stage in ("both", "scratch"):
        proc = run_cli(
            *common,
            f"method.stage={stage}",
            f"output={tmp_path / stage}",
            f"hydra.run.dir={tmp_path / 'r' / stage}",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((tmp_path / "r" / stage / "train_summary.json").read_text())
        assert summary["steps"] == 4 and summary["model"] == "aligned_vla"
        saved = json.loads((tmp_path / stage / "config.json").read_text())
        assert saved["config"]["vlm_type"] == "hf_vla"


def test_bench_times_an_hf_teacher_beside_its_ceed_and_dysl_students(dataset_and_teacher, tmp_path):
    dataset, folder = dataset_and_teacher
    _, dysl = skip_student_of(folder)
    dysl.save_pretrained(tmp_path / "dysl")
    out = tmp_path / "bench.json"
    proc = run_cli(
        "bench",
        f"teachers=[{folder}]",
        f"students=[{folder}]",
        f"dysl_students=[{tmp_path / 'dysl'}]",
        f"dataset={dataset.root}",
        "replay_calls=3",
        "batch_sizes=[1]",
        "calls=2",
        "warmup=1",
        f"output_json={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["decoders"]
    assert {r["decoder"] for r in rows} == {
        "ar",
        "jacobi",
        "jacobi_early_exit",
        "ceed",
        "ceed_early_exit",
        "dysl_full",
        "dysl_skip",
        "dysl_guided",
    }
    skip = next(r for r in rows if r["decoder"] == "dysl_skip")
    assert skip["layers_mean"] == 2.0 and skip["flops_reduction_vs_ar"] > 1.0  # 2 of the 3 layers
