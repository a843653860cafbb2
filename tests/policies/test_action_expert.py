"""The diffusion action expert: separable parts, reproducible sampling, save/load, learning."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")


def tiny_expert(seed=0):
    from vla_kd.policies.action_expert import ActionExpertConfig, DiffusionActionExpert

    torch.manual_seed(seed)
    return DiffusionActionExpert(ActionExpertConfig(state_dim=5, horizon=3, image_size=64,
                                                    features=32, hidden=64)).eval()


def observation(batch=2):
    g = torch.Generator().manual_seed(0)
    return {"rgb": torch.randint(0, 255, (batch, 64, 64, 3), generator=g, dtype=torch.uint8).numpy(),
            "state": torch.randn(batch, 5, generator=g).numpy()}


def test_encoder_and_decoder_are_separable():
    expert = tiny_expert()
    obs = observation()
    features = expert.encoder(torch.as_tensor(obs["rgb"]), torch.as_tensor(obs["state"]))
    assert features.shape == (2, 32)
    chunk = expert.decoder.sample(features, torch.Generator().manual_seed(1))
    assert chunk.shape == (2, 3, 7) and torch.all(chunk.abs() <= 1.0 + 1e-6)
    # Any features of the right width drive the decoder: what alignment will feed it.
    assert expert.decoder.sample(torch.zeros(4, 32)).shape == (4, 3, 7)


def test_sampling_is_reproducible_and_round_trips(tmp_path):
    from vla_kd.policies.pretrained import PretrainedPolicy

    expert = tiny_expert()
    loaded = PretrainedPolicy.from_pretrained(expert.save_pretrained(tmp_path / "expert"))
    for name, value in expert.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    obs = observation()
    np.testing.assert_array_equal(expert.predict_action_chunk(obs), loaded.predict_action_chunk(obs))


def test_training_moves_samples_toward_the_demonstrated_chunks():
    from vla_kd.methods.bc import DiffusionBC

    expert = tiny_expert()
    obs = observation(batch=4)
    target = torch.linspace(-0.5, 0.5, 4)[:, None, None].expand(4, 3, 7).clone()
    batch = {"observation.images.rgb": torch.as_tensor(obs["rgb"]),
             "observation.state": torch.as_tensor(obs["state"]),
             "action": target, "action_is_pad": torch.zeros(4, 3, dtype=torch.bool)}
    before = np.abs(expert.predict_action_chunk(obs) - target.numpy()).mean()
    method = DiffusionBC(expert.train(), shift_pad=0)
    optimizer = torch.optim.Adam(expert.parameters(), lr=2e-3)
    torch.manual_seed(0)
    for step in range(300):
        loss, _ = method.loss(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = np.abs(expert.eval().predict_action_chunk(obs) - target.numpy()).mean()
    assert after < 0.65 * before


def test_auxiliary_head_adds_its_loss_and_stays_off_the_acting_path(tmp_path):
    from vla_kd.methods.bc import DiffusionBC
    from vla_kd.policies.action_expert import ActionExpertConfig, DiffusionActionExpert
    from vla_kd.policies.pretrained import PretrainedPolicy

    torch.manual_seed(0)
    expert = DiffusionActionExpert(ActionExpertConfig(state_dim=5, horizon=3, image_size=64, features=32,
                                                      hidden=64, aux_state_dim=2))
    expert.set_normalization({"mean": torch.zeros(5), "std": torch.ones(5)},
                             {"min": -torch.ones(7), "max": torch.ones(7)},
                             {"mean": torch.zeros(2), "std": torch.ones(2)})
    obs = observation(batch=4)
    batch = {"observation.images.rgb": torch.as_tensor(obs["rgb"]),
             "observation.state": torch.as_tensor(obs["state"]),
             "action": torch.zeros(4, 3, 7), "action_is_pad": torch.zeros(4, 3, dtype=torch.bool),
             "observation.environment_state": torch.randn(4, 2)}
    # the same DDPM draw for both losses: only the auxiliary term differs
    torch.manual_seed(1)
    loss, logs = DiffusionBC(expert, shift_pad=0, aux_weight=0.5).loss(batch, 0)
    torch.manual_seed(1)
    plain, _ = DiffusionBC(expert, shift_pad=0).loss(batch, 0)
    assert logs["losses/aux_privileged"] > 0
    assert torch.isclose(loss, plain + 0.5 * logs["losses/aux_privileged"], rtol=1e-5)
    loss.backward()
    assert expert.aux_head.weight.grad is not None and expert.encoder.image is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in expert.encoder.image.parameters())
    # acting reads rgb + proprio only, and the head survives a save/load round trip
    expert.eval()
    loaded = PretrainedPolicy.from_pretrained(expert.save_pretrained(tmp_path / "expert"))
    assert torch.equal(loaded.aux_head.weight, expert.aux_head.weight)
    np.testing.assert_array_equal(expert.predict_action_chunk(obs), loaded.predict_action_chunk(obs))
    with pytest.raises(ValueError, match="aux_state_dim"):
        DiffusionBC(tiny_expert(), aux_weight=1.0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_a_perfect_denoiser_has_zero_loss_and_recovers_the_clean_chunk(prediction_type):
    """denoise_step's target and one-step clean estimate follow the decoder's parameterisation."""
    from vla_kd.methods.bc import denoise_step
    from vla_kd.policies.action_expert import ActionExpertConfig, DiffusionActionDecoder

    config = ActionExpertConfig(state_dim=1, horizon=3, prediction_type=prediction_type)
    decoder = DiffusionActionDecoder(config)
    scheduler = decoder.scheduler("ddpm")
    clean = torch.rand(5, 3, 7) * 1.6 - 0.8

    def oracle(noisy, t, features):  # knows the clean chunk, so it can answer exactly
        if prediction_type == "sample":
            return clean
        alpha = scheduler.alphas_cumprod[t].view(-1, 1, 1)
        return (noisy - alpha.sqrt() * clean) / (1 - alpha).sqrt()

    torch.manual_seed(0)
    step = denoise_step(scheduler, oracle, torch.zeros(5, 1), clean, torch.zeros(5, 3, dtype=torch.bool))
    assert float(step.mse) < 1e-8
    torch.testing.assert_close(step.clean_estimate, clean, atol=1e-4, rtol=0)


def test_unknown_prediction_type_is_refused():
    from vla_kd.policies.action_expert import ActionExpertConfig, DiffusionActionDecoder

    with pytest.raises(ValueError, match="prediction_type"):
        DiffusionActionDecoder(ActionExpertConfig(state_dim=1, prediction_type="v_prediction"))


def test_a_two_camera_expert_reads_both_cameras_and_round_trips(tmp_path):
    from vla_kd.methods.bc import DiffusionBC
    from vla_kd.policies.action_expert import ActionExpertConfig, DiffusionActionExpert
    from vla_kd.policies.pretrained import PretrainedPolicy

    torch.manual_seed(0)
    expert = DiffusionActionExpert(ActionExpertConfig(
        state_dim=5, horizon=3, image_size=64, features=32, hidden=64, cameras=("rgb", "wrist_rgb"),
    )).eval()
    obs = observation()
    obs["wrist_rgb"] = obs["rgb"][:, ::-1].copy()
    images = {k: torch.as_tensor(obs[k]) for k in ("rgb", "wrist_rgb")}
    state = torch.as_tensor(obs["state"])
    features = expert.encoder(images, state)
    assert features.shape == (2, 32)
    # The wrist frame is an input: another wrist frame gives other features.
    other = expert.encoder({**images, "wrist_rgb": 255 - images["wrist_rgb"]}, state)
    assert not torch.allclose(features, other)
    with pytest.raises(ValueError, match="wrist_rgb"):
        expert.encoder({"rgb": images["rgb"]}, state)
    with pytest.raises(ValueError, match="dict"):
        expert.encoder(images["rgb"], state)

    loaded = PretrainedPolicy.from_pretrained(expert.save_pretrained(tmp_path / "expert"))
    assert tuple(loaded.config.cameras) == ("rgb", "wrist_rgb")
    np.testing.assert_array_equal(expert.predict_action_chunk(obs), loaded.predict_action_chunk(obs))

    batch = {"observation.images.rgb": images["rgb"], "observation.images.wrist_rgb": images["wrist_rgb"],
             "observation.state": state, "action": torch.zeros(2, 3, 7),
             "action_is_pad": torch.zeros(2, 3, dtype=torch.bool)}
    loss, _ = DiffusionBC(expert.train(), shift_pad=2).loss(batch, 0)
    loss.backward()
    assert expert.encoder.other_images["wrist_rgb"].net[0].weight.grad.abs().sum() > 0


def test_an_expert_reading_some_state_features_ignores_the_rest_and_round_trips(tmp_path):
    from vla_kd.policies.action_expert import ActionExpertConfig, DiffusionActionExpert
    from vla_kd.policies.pretrained import PretrainedPolicy

    torch.manual_seed(0)
    expert = DiffusionActionExpert(ActionExpertConfig(state_dim=5, horizon=3, image_size=64, features=32,
                                                      hidden=64, state_features=(0, 1, 2))).eval()
    loaded = PretrainedPolicy.from_pretrained(expert.save_pretrained(tmp_path / "expert"))
    assert tuple(loaded.config.state_features) == (0, 1, 2)
    obs = observation()
    moved = {**obs, "state": obs["state"] + np.array([0, 0, 0, 5.0, -5.0], dtype=np.float32)}
    loaded.sample_seed = 0
    first = loaded.predict_action_chunk(obs)
    loaded.sample_seed = 0
    np.testing.assert_array_equal(first, loaded.predict_action_chunk(moved))  # 3 and 4 unread
    loaded.sample_seed = 0
    nudged = {**obs, "state": obs["state"] + np.array([0.5, 0, 0, 0, 0], dtype=np.float32)}
    assert not np.array_equal(first, loaded.predict_action_chunk(nudged))  # 0 is read
