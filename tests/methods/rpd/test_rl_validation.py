"""Validation during RL: validated at the start, every N env steps and at the end; the best
weights are kept (not the last), survive a resume, and validation seeds cannot be test seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from vla_kd.errors import UserError

pytest.importorskip("stable_baselines3")

from rl_toys import make_rpd


def make_ppo():
    """PPO (RPD at lambda 0, no teacher) on two toy envs."""
    return make_rpd(None, weight=0.0)[0]


def scripted_scores(rates):
    """A scorer returning ``rates`` in turn and recording the weights it was shown."""
    shown = []

    def score(state):
        shown.append(state)
        return {"success_rate": rates[len(shown) - 1], "ci95": [0.0, 1.0], "mean_return": 0.0}

    return score, shown


def weights(model):
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_best_validated_weights_are_kept_not_the_last(tmp_path):
    from vla_kd.methods.rpd.validation import ValidationCallback

    model = make_ppo()
    start = weights(model)
    score, shown = scripted_scores([0.6, 0.8, 0.8, 0.2])
    callback = ValidationCallback(score, every=32, env_steps=lambda: model.num_timesteps, store=tmp_path)
    model.learn(96, callback=callback)  # three rollouts of 2 envs x 16 steps
    assert [row["env_steps"] for row in callback.history] == [0, 32, 64, 96]
    assert same(shown[0], start) and not same(shown[1], start)
    assert same(callback.best_state, shown[1])  # 0.8 first reached at 32; the tie at 64 keeps it
    assert callback.best["env_steps"] == 32
    assert not same(callback.best_state, weights(model))  # the last weights moved on

    # a resumed run reads the history and the best weights back; a fresh run in the folder does not
    resumed = ValidationCallback(scripted_scores([0.9])[0], every=32, env_steps=lambda: 96, store=tmp_path,
                                 resume=True)
    assert resumed.history == callback.history and same(resumed.best_state, callback.best_state)
    fresh = ValidationCallback(scripted_scores([0.9])[0], every=32, env_steps=lambda: 0, store=tmp_path)
    assert fresh.history == [] and fresh.best_state is None


def test_validating_does_not_change_the_training_run():
    from vla_kd.methods.rpd.validation import ValidationCallback

    def noisy_score(state):  # draws from every global generator, as building a student does
        torch.nn.Linear(4, 4)
        np.random.rand(3)
        torch.rand(3)
        return {"success_rate": 0.5, "ci95": [0.0, 1.0], "mean_return": 0.0}

    plain = make_ppo()  # SB3 seeds the global generators when a model is built: one at a time
    plain.learn(96)
    validated = make_ppo()
    validated.learn(96, callback=ValidationCallback(noisy_score, 32, lambda: validated.num_timesteps))
    assert same(weights(plain), weights(validated))


def test_every_validation_sees_the_weights_of_its_moment():
    from vla_kd.methods.rpd.validation import ValidationCallback

    model = make_ppo()
    score, shown = scripted_scores([0.1, 0.2, 0.3])
    model.learn(64, callback=ValidationCallback(score, every=32, env_steps=lambda: model.num_timesteps))
    assert len(shown) == 3 and same(shown[-1], weights(model))  # the end's validation: the final weights
    assert not same(shown[0], shown[1]) and not same(shown[1], shown[2])


@pytest.mark.parametrize(
    ("seed", "episodes", "overlaps"),
    [(50000, 50, False), (100049, 10, True), (99999, 2, True), (99990, 10, False), (100050, 5, False)],
)
def test_validation_seeds_must_not_overlap_the_held_out_ones(seed, episodes, overlaps):
    from vla_kd.methods.rpd.validation import check_validation_seeds

    validation = OmegaConf.create({"seed": seed, "episodes": episodes})
    held_out = OmegaConf.create({"seed": 100000, "episodes": 50})
    if overlaps:
        with pytest.raises(UserError, match="overlap the held-out"):
            check_validation_seeds(validation, held_out)
    else:
        check_validation_seeds(validation, held_out)
