"""The shared trainer: a loss falls, checkpoints round-trip, resume reproduces a straight run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vla_kd.data.lerobot_dataset import LeRobotDataset
from vla_kd.data.lerobot_writer import LeRobotWriter
from vla_kd.methods.bc import ChunkedBC, random_shift
from vla_kd.policies.mlp_bc import ChunkedBCConfig, ChunkedBCPolicy
from vla_kd.policies.pretrained import PretrainedPolicy
from vla_kd.tracking import Tracker
from vla_kd.trainer import Trainer, TrainerConfig


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Actions are a fixed function of the episode's (constant) state and of image brightness,
    which ramps by a fixed amount per frame: whole action chunks are predictable."""
    root = tmp_path_factory.mktemp("data") / "ds"
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(4, 7)).astype(np.float32) * 0.3
    writer = LeRobotWriter(root, fps=20, robot_type="test", cameras={"rgb": (64, 64)}, state_dim=4)
    for episode in range(6):
        states = np.repeat(rng.normal(size=(1, 4)), 10, axis=0).astype(np.float32)
        shade = np.linspace(30, 220, 10).astype(np.uint8)
        images = np.broadcast_to(shade[:, None, None, None], (10, 64, 64, 3)).copy()
        actions = np.tanh(states @ weights + (shade[:, None] / 255.0 - 0.5)).astype(np.float32)
        writer.add_episode(f"task {episode % 2}", states, actions, {"rgb": images})
    return LeRobotDataset(writer.finalize(), action_horizon=3)


def make_method(dataset, seed=0):
    torch.manual_seed(seed)
    policy = ChunkedBCPolicy(ChunkedBCConfig(state_dim=4, horizon=3, image_size=64, hidden=64))
    policy.set_normalization(dataset.feature_stats("observation.state"), dataset.feature_stats("action"))
    return ChunkedBC(policy, shift_pad=2)


def config(**overrides):
    base = dict(steps=4, batch_size=8, lr=1e-3, warmup_steps=1, log_every=1, checkpoint_every=2,
                progress=False, seed=3)
    return TrainerConfig(**{**base, **overrides})


def test_bc_loss_falls(dataset, tmp_path):
    method = make_method(dataset)
    trainer = Trainer(method, dataset, config(steps=150, log_every=10, checkpoint_every=1000), tmp_path)
    first = float(method.loss(trainer.batch(0), 0)[0].detach())
    trainer.fit()
    method.model.eval()
    with torch.no_grad():
        final = np.mean([float(method.loss(trainer.batch(s), s)[0]) for s in range(5)])
    assert final < 0.5 * first


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_reproduces_a_straight_run(dataset, tmp_path, ema_decay):
    straight = make_method(dataset)
    straight_tracker = Tracker(tmp_path / "a", use_wandb=False)
    Trainer(straight, dataset, config(ema_decay=ema_decay), tmp_path / "a", straight_tracker).fit()
    straight_tracker.finish()

    first = make_method(dataset)
    tracker = Tracker(tmp_path / "b", use_wandb=False)
    # "killed" at step 2
    Trainer(first, dataset, config(ema_decay=ema_decay), tmp_path / "b", tracker).fit(until=2)
    tracker.finish()
    resumed = make_method(dataset, seed=99)  # different init: everything must come from the checkpoint
    tracker = Tracker(tmp_path / "b", use_wandb=False)
    trainer = Trainer(resumed, dataset, config(resume=True, ema_decay=ema_decay), tmp_path / "b", tracker)
    trainer.fit()
    tracker.finish()
    assert trainer.step == 4
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    def logged(folder):  # wall-clock time is the one metric allowed to differ
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "time/seconds"} for line in lines]

    assert logged(tmp_path / "a") == logged(tmp_path / "b")


def test_ema_run_ends_with_the_averaged_weights(dataset, tmp_path):
    plain = make_method(dataset)
    trainer = Trainer(plain, dataset, config(steps=2, checkpoint_every=100), tmp_path / "plain")
    trainer.fit(until=1)
    after_one = {k: v.clone() for k, v in plain.model.state_dict().items()}
    trainer.fit()
    after_two = plain.model.state_dict()
    averaged = make_method(dataset)
    Trainer(averaged, dataset, config(steps=2, checkpoint_every=100, ema_decay=0.25), tmp_path / "ema").fit()
    # The average starts as a copy of the first step's weights, then moves 75% of the way to each new step's.
    for name, value in averaged.model.state_dict().items():
        expected = 0.25 * after_one[name].float() + 0.75 * after_two[name].float()
        torch.testing.assert_close(value.float(), expected, msg=name)
    assert any(not torch.equal(v, after_two[k]) for k, v in averaged.model.state_dict().items())


def test_checkpoint_is_a_loadable_policy_folder(dataset, tmp_path):
    method = make_method(dataset)
    Trainer(method, dataset, config(), tmp_path).fit()
    folder = tmp_path / "checkpoints" / "last"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not (tmp_path / "checkpoints" / "last.tmp").exists()
    loaded = PretrainedPolicy.from_pretrained(folder)
    assert isinstance(loaded, ChunkedBCPolicy)
    for name, value in method.model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    obs = {"state": np.zeros((2, 4), np.float32), "rgb": np.zeros((2, 64, 64, 3), np.uint8)}
    method.model.eval()
    np.testing.assert_array_equal(method.model.predict_action_chunk(obs), loaded.predict_action_chunk(obs))


def test_batches_are_a_pure_function_of_seed_and_step(dataset, tmp_path):
    a = Trainer(make_method(dataset), dataset, config(), tmp_path / "a")
    b = Trainer(make_method(dataset), dataset, config(), tmp_path / "b")
    for step in (0, 7, 3, 7):
        assert np.array_equal(a.batch_indices(step), b.batch_indices(step))
    epoch = np.concatenate([a.batch_indices(s) for s in range(len(dataset) // 8)])
    assert len(set(epoch.tolist())) == len(epoch), "no repeats within an epoch"


def test_random_shift_keeps_shape_and_moves_content():
    torch.manual_seed(0)
    images = torch.zeros(4, 16, 16, 3, dtype=torch.uint8)
    images[:, 6:10, 6:10] = 255
    shifted = random_shift(images, pad=3)
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    assert int(shifted.sum()) == int(images.sum()), "a small square stays fully inside"
    assert not torch.equal(shifted, images)


def test_random_shift_equals_replicate_pad_then_crop():
    images = torch.randint(0, 256, (5, 12, 10, 3), dtype=torch.uint8)
    torch.manual_seed(1)
    shifted = random_shift(images, pad=2)
    torch.manual_seed(1)  # the same offsets, drawn in the same order
    dx, dy = torch.randint(0, 5, (5,)), torch.randint(0, 5, (5,))
    padded = torch.nn.functional.pad(images.permute(0, 3, 1, 2).float(), (2, 2, 2, 2), mode="replicate")
    for i in range(5):
        crop = padded[i, :, dy[i] : dy[i] + 12, dx[i] : dx[i] + 10].permute(1, 2, 0).to(torch.uint8)
        assert torch.equal(shifted[i], crop)


def test_corrupt_weights_give_a_clear_error(dataset, tmp_path):
    from vla_kd.errors import UserError

    folder = make_method(dataset).model.save_pretrained(tmp_path / "p")
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt"):
        PretrainedPolicy.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"no model\.safetensors"):
        PretrainedPolicy.from_pretrained(folder)
