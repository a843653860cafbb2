"""The three trainable policies fit their normalisers alike: an auxiliary-head model given no
auxiliary statistics keeps that head's normaliser at identity instead of failing."""

from __future__ import annotations

import pytest
import torch


def chunked_bc():
    from vla_kd.policies.mlp_bc import ChunkedBCConfig, ChunkedBCPolicy

    config = ChunkedBCConfig(state_dim=3, horizon=2, image_size=64, hidden=16, aux_state_dim=2)
    policy = ChunkedBCPolicy(config)
    return policy, {"min": -torch.ones(7), "max": torch.ones(7)}


def action_expert():
    from vla_kd.policies.action_expert import ActionExpertConfig, DiffusionActionExpert

    expert = DiffusionActionExpert(ActionExpertConfig(state_dim=3, horizon=2, image_size=64, features=16,
                                                      hidden=32, aux_state_dim=2))
    return expert, {"min": -torch.ones(7), "max": torch.ones(7)}


def token_vla():
    from vla_kd.policies.token_vla import TokenVLA, TokenVLAConfig

    vla = TokenVLA(TokenVLAConfig(state_dim=3, horizon=2, image_size=64, hidden=32, layers=1, heads=2,
                                  intermediate=64, aux_state_dim=2))
    return vla, torch.rand(20, 7) * 2 - 1  # the action bins fit from raw actions


@pytest.mark.parametrize("build", [chunked_bc, action_expert, token_vla])
def test_auxiliary_normaliser_is_identity_without_stats_and_fitted_with_them(build) -> None:
    state_stats = {"mean": torch.full((3,), 2.0), "std": torch.full((3,), 4.0)}
    policy, actions = build()
    policy.set_normalization(state_stats, actions)
    assert torch.equal(policy.aux_norm.mean, torch.zeros(2))
    assert torch.equal(policy.aux_norm.std, torch.ones(2))

    aux_stats = {"mean": torch.tensor([1.0, -1.0]), "std": torch.tensor([3.0, 5.0])}
    policy.set_normalization(state_stats, actions, aux_stats)
    assert torch.equal(policy.aux_norm.mean, torch.tensor([1.0, -1.0]))
    assert torch.equal(policy.aux_norm.std, torch.tensor([3.0, 5.0]))


def test_state_features_zero_the_other_features_and_stay_out_of_the_weights() -> None:
    from vla_kd.nn.normalization import Standardizer

    norm = Standardizer(4, keep=[0, 2])
    norm.fit({"mean": torch.ones(4), "std": torch.full((4,), 2.0)})
    x = torch.tensor([[3.0, 5.0, -1.0, 9.0]])
    assert torch.equal(norm(x), torch.tensor([[1.0, 0.0, -1.0, 0.0]]))
    assert "keep_mask" not in norm.state_dict()  # checkpoints saved before the option still load
    assert torch.equal(Standardizer(4)(x), x)  # keep=None reads every feature


@pytest.mark.parametrize("keep", [[], [4], [-1], [1, 1]])
def test_bad_state_features_are_refused(keep) -> None:
    from vla_kd.nn.normalization import Standardizer

    with pytest.raises(ValueError, match="state_features"):
        Standardizer(4, keep=keep)


@pytest.mark.parametrize("build", [chunked_bc, action_expert, token_vla])
def test_a_model_with_state_features_builds_its_normaliser_from_them(build) -> None:
    from dataclasses import replace

    policy, _ = build()
    narrowed = type(policy)(replace(policy.config, state_features=(1,)))
    norm = narrowed.encoder.state_norm if hasattr(narrowed, "encoder") else narrowed.state_norm
    assert torch.equal(norm.keep_mask, torch.tensor([0.0, 1.0, 0.0]))
