"""RPD on toy envs: one labelling pass per rollout, the pull toward the teacher, plain PPO at
lambda 0, student round trip and resume, chunk-acting students, the behaviour-cloning warm start,
the critic warm-up and initial weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vla_kd.errors import UserError
from vla_kd.policies.pretrained import ChunkedPolicy

pytest.importorskip("stable_baselines3")

from rl_toys import (
    CountingExpert,
    CountingTeacher,
    Horizon2,
    ToyEnv,
    make_rpd,
    tiny_vla,
    toy_student_config,
    toy_venv,
)

from vla_kd.methods.rpd.algorithm import ACTION_PARTS, RPD


def test_teacher_is_queried_once_per_rollout_step_not_per_minibatch():
    teacher = CountingTeacher()
    model, _ = make_rpd(teacher)
    model.learn(64)  # 2 rollouts of 16 steps x 2 envs, 3 epochs x 4 minibatches each
    assert teacher.calls == 2 * 16  # a stateful teacher: one batched call per stored time step
    assert model.logger.name_to_value["train/teacher_loss"] > 0


def test_buffer_minibatches_carry_the_label_of_their_own_state():
    model, _ = make_rpd(CountingTeacher())
    model.learn(32)
    buffer = model.rollout_buffer
    buffer.generator_ready = False  # as after a rollout: unflattened arrays
    buffer.observations = {k: v.reshape(16, 2, -1) for k, v in buffer.observations.items()}
    buffer.teacher_actions = (buffer.observations["state"][..., :1] * np.ones(7)).astype(np.float32)
    for arr in ("actions", "values", "log_probs", "advantages", "returns"):
        setattr(
            buffer,
            arr,
            getattr(buffer, arr).reshape(16, 2, -1).squeeze(-1)
            if arr != "actions"
            else getattr(buffer, arr).reshape(16, 2, 7),
        )
    for batch in buffer.get(8):
        torch.testing.assert_close(batch.teacher_actions[:, 0], batch.observations["state"][:, 0])


def test_zero_weight_is_plain_ppo_and_never_calls_the_teacher():
    teacher = CountingTeacher()
    model, _ = make_rpd(teacher, weight=0.0)
    model.learn(32)
    assert teacher.calls == 0 and "train/teacher_loss" not in model.logger.name_to_value


def test_rpd_pulls_the_student_mean_toward_the_teacher():
    teacher = CountingTeacher()
    model, config = make_rpd(teacher, weight=10.0, n_steps=32, learning_rate=3e-3)
    from vla_kd.policies.gaussian_mlp import GaussianStudent

    before = np.abs(
        model.predict({"state": np.zeros((1, 3)), "privileged": np.zeros((1, 2))}, deterministic=True)[0]
        - 0.3
    ).mean()
    model.learn(640)
    student = GaussianStudent(config)
    student.actor_critic.load_state_dict(model.policy.state_dict())
    after = np.abs(
        student.act({"state": np.zeros((1, 3), np.float32), "privileged": np.zeros((1, 2), np.float32)}) - 0.3
    ).mean()
    assert after < 0.5 * before


def test_student_save_load_round_trip(tmp_path):
    from vla_kd.policies.gaussian_mlp import GaussianStudent
    from vla_kd.policies.pretrained import PretrainedPolicy

    model, config = make_rpd(CountingTeacher())
    student = GaussianStudent(config)
    student.actor_critic.load_state_dict(model.policy.state_dict())
    loaded = PretrainedPolicy.from_pretrained(student.save_pretrained(tmp_path / "student"))
    assert isinstance(loaded, GaussianStudent) and loaded.uses_privileged
    for name, value in student.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    obs = {
        "state": np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32),
        "privileged": np.zeros((4, 2), np.float32),
    }
    np.testing.assert_array_equal(student.act(obs), loaded.act(obs))
    # The student acts with the mean SB3's own deterministic predict gives.
    sb3_actions, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(student.act(obs), sb3_actions, atol=1e-6)


def test_resume_from_sb3_checkpoint_keeps_the_step_count(tmp_path):
    teacher = CountingTeacher()
    model, _ = make_rpd(teacher)
    model.learn(32)
    model.save(tmp_path / "ckpt.zip")
    from stable_baselines3.common.vec_env import DummyVecEnv

    resumed = RPD.load(
        tmp_path / "ckpt.zip", env=DummyVecEnv([ToyEnv, ToyEnv]), device="cpu", teacher=teacher
    )
    assert resumed.num_timesteps == 32 and resumed.teacher is teacher
    for name, value in model.policy.state_dict().items():
        assert torch.equal(value, resumed.policy.state_dict()[name]), name
    resumed.learn(32, reset_num_timesteps=False)
    assert resumed.num_timesteps == 64



def test_sampling_student_is_seeded_and_spread_by_its_std():
    from vla_kd.policies.gaussian_mlp import GaussianStudent

    _, config = make_rpd(CountingTeacher())
    obs = {"state": np.zeros((2000, 3), np.float32), "privileged": np.zeros((2000, 2), np.float32)}
    student = GaussianStudent(config)
    mean = student.act(obs)
    student.sample_with(7)
    first = student.act(obs)
    student.sample_with(7)
    np.testing.assert_array_equal(first, student.act(obs))  # same seed, same samples
    spread = (first - mean)[np.abs(first) < 1].std()  # clamping to [-1, 1] cuts the tails
    assert 0.4 < spread < 0.65, spread  # log_std_init -0.5: std 0.61
    from vla_kd.errors import UserError
    from vla_kd.policies.loading import build_policy

    with pytest.raises(UserError, match="RL student"):
        build_policy("random", None, sample_actions=True)




# ------------------------------------------------------------- chunk-acting students
def test_action_chunk_wrapper_executes_its_chunk_and_stops_at_the_episode_end():
    from vla_kd.envs.rl import ActionChunk

    env = ActionChunk(ToyEnv(), 3)
    assert env.action_space.shape == (21,)
    env.reset(seed=0)
    chunk = np.concatenate([np.full(7, 0.3), np.full(7, 0.5), np.full(7, 0.1)]).astype(np.float32)
    _, reward, terminated, truncated, info = env.step(chunk)
    assert env.unwrapped.t == 3 and info["executed_steps"] == 3
    assert reward == pytest.approx(-0.4) and not (terminated or truncated)  # 0 - 0.2 - 0.2
    env.step(chunk)  # t = 6
    _, _, _, truncated, info = env.step(chunk)  # the episode ends at t = 8, mid-chunk
    assert truncated and info["executed_steps"] == 2 and env.unwrapped.t == 8



def test_chunk_student_executes_its_chunk_open_loop_and_round_trips(tmp_path):
    from vla_kd.policies.gaussian_mlp import GaussianStudent
    from vla_kd.policies.pretrained import PretrainedPolicy

    torch.manual_seed(0)
    student = GaussianStudent(toy_student_config(chunk=2))
    assert student.actor_critic.action_space.shape == (14,) and student.actions_per_chunk == 2
    obs = {"state": np.ones((1, 3), np.float32), "privileged": np.zeros((1, 2), np.float32)}
    chunk = student.predict_action_chunk(obs)
    assert chunk.shape == (1, 2, 7)
    other = {"state": -np.ones((1, 3), np.float32), "privileged": np.zeros((1, 2), np.float32)}
    np.testing.assert_array_equal(student.act(obs), chunk[:, 0])
    np.testing.assert_array_equal(student.act(other), chunk[:, 1])  # open-loop: no new prediction
    np.testing.assert_array_equal(student.act(other), student.predict_action_chunk(other)[:, 0])
    loaded = PretrainedPolicy.from_pretrained(student.save_pretrained(tmp_path / "student"))
    assert loaded.config.action_chunk == 2
    np.testing.assert_array_equal(loaded.predict_action_chunk(obs), chunk)


def test_rpd_pulls_a_chunk_students_chunks_toward_the_teachers():
    target = np.concatenate([np.full(7, 0.3), np.full(7, -0.3)]).astype(np.float32)

    class ConstantChunks(ChunkedPolicy):
        name = "constant chunks"

        def __init__(self):
            super().__init__(Horizon2())
            self.calls = 0

        def predict_action_chunk(self, obs):
            self.calls += 1
            return np.tile(target.reshape(1, 2, 7), (len(obs["state"]), 1, 1))

    teacher = ConstantChunks()
    model, _ = make_rpd(teacher, weight=10.0, n_steps=32, chunk=2, learning_rate=3e-3)
    obs = {"state": np.zeros((1, 3)), "privileged": np.zeros((1, 2))}
    before = np.abs(model.predict(obs, deterministic=True)[0] - target).mean()
    model.learn(640)  # 10 rollouts of 32 decisions x 2 envs
    assert teacher.calls == 10  # one flat batch per rollout
    after = np.abs(model.predict(obs, deterministic=True)[0] - target).mean()
    assert after < 0.5 * before, (before, after)
    logged = model.logger.name_to_value  # per action part, both actions of each chunk folded in
    parts = [logged[f"train/teacher_mse/{name}"] for name in ACTION_PARTS]
    assert np.mean(parts) == pytest.approx(logged["train/teacher_loss"], rel=1e-4)


# ------------------------------------------------------------------- behaviour-cloning warm start
class LinearChunks(ChunkedPolicy):
    """A chunk teacher whose 2-action chunk is a fixed linear function of the state."""

    name = "linear chunks"
    weights = np.linspace(-0.5, 0.5, 14 * 3, dtype=np.float32).reshape(3, 14)

    def __init__(self):
        super().__init__(Horizon2())

    def predict_action_chunk(self, obs):
        return (np.asarray(obs["state"]) @ self.weights).reshape(-1, 2, 7)


def test_warm_start_records_the_teachers_own_chunks_and_the_actor_clones_them():
    from vla_kd.methods.rpd.warm_start import collect_teacher_decisions, fit_actor

    teacher = LinearChunks()
    decisions = collect_teacher_decisions(toy_venv(2), teacher, "x", episodes=4, keys=("state", "privileged"),
                                          chunk=2)
    # 8-step episodes, 2 actions per decision, 2 envs in lockstep: 2 rounds of 4 decisions
    assert decisions.episodes == 4 and decisions.env_steps == 32 and decisions.labels.shape == (16, 14)
    assert set(decisions.observations) == {"state", "privileged"}
    expected = decisions.observations["state"] @ LinearChunks.weights
    np.testing.assert_allclose(decisions.labels, expected, atol=1e-6)

    model, _ = make_rpd(None, weight=0.0, chunk=2)
    critic = [p.detach().clone() for p in model.policy.value_net.parameters()]
    log_std = model.policy.log_std.detach().clone()
    fit = fit_actor(model.policy, decisions, steps=300, batch_size=8, learning_rate=3e-3, seed=0)
    assert fit["final_mse"] < 0.1 * fit["first_mse"], fit
    assert "held_out_mse" in fit
    for before, after in zip(critic, model.policy.value_net.parameters(), strict=True):
        torch.testing.assert_close(before, after)  # the critic and the std are RL's to learn
    torch.testing.assert_close(log_std, model.policy.log_std)


def test_warm_start_with_a_stateful_teacher_resets_it_where_episodes_end():
    from vla_kd.methods.rpd.warm_start import collect_teacher_decisions

    decisions = collect_teacher_decisions(toy_venv(), CountingExpert(), "x", episodes=4, keys=("state",))
    assert decisions.labels.shape == (32, 7) and decisions.env_steps == 32
    per_env = decisions.labels[:, 0].reshape(16, 2)  # rows are (step, env)
    np.testing.assert_array_equal(per_env[:, 0], [*range(1, 9), *range(1, 9)])


def test_warm_start_without_a_teacher_is_a_clear_error(tmp_path):
    from hydra import compose, initialize_config_module

    from vla_kd.cli_support import without_hydra
    from vla_kd.methods import runner

    with initialize_config_module(config_module="vla_kd.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["method=ppo", "method.warm_start.episodes=2",
                                                      "tracker=none", "env=maniskill/PushCube-v1"],
                      return_hydra_config=True)
    without_hydra(cfg)  # as in a run: Hydra's node apart, ${hydra:...} resolvable
    ctx = runner.make_context(cfg, cfg.method, None, tmp_path, tmp_path / "out", env=cfg.env)
    with pytest.raises(UserError, match=r"warm_start\.episodes > 0 clones a teacher"):
        runner.train(ctx)


def actor_and_critic(model):
    policy = model.policy
    actor = [*policy.mlp_extractor.policy_net.parameters(), *policy.action_net.parameters(), policy.log_std]
    critic = [*policy.mlp_extractor.value_net.parameters(), *policy.value_net.parameters()]
    return [p.detach().clone() for p in actor], [p.detach().clone() for p in critic]


def test_critic_warmup_trains_the_value_function_only_then_the_actor_too():
    teacher = CountingTeacher()
    model, _ = make_rpd(teacher, weight=1.0, critic_warmup_steps=64)
    actor, critic = actor_and_critic(model)
    model.learn(64)  # two rollouts of 32 env steps, both within the warm-up
    actor_after, critic_after = actor_and_critic(model)
    for before, after in zip(actor, actor_after, strict=True):
        assert torch.equal(before, after)  # bit-identical: no gradient reached the actor
    assert any(not torch.equal(b, a) for b, a in zip(critic, critic_after, strict=True))
    assert teacher.calls == 0 and model.logger.name_to_value["train/critic_only"] == 1.0
    model.learn(32, reset_num_timesteps=False)  # past the warm-up: the actor learns
    assert any(not torch.equal(b, a) for b, a in zip(actor_after, actor_and_critic(model)[0], strict=True))
    assert teacher.calls == 16 and model.logger.name_to_value["train/critic_only"] == 0.0


def test_init_policy_copies_actor_and_critic_but_not_the_log_std(tmp_path):
    from dataclasses import replace

    from vla_kd.methods.rpd.distiller import load_initial_weights
    from vla_kd.policies.gaussian_mlp import GaussianStudent

    trained, config = make_rpd(CountingTeacher())
    trained.learn(32)
    # saved from a run whose teacher read the camera too: a key the student's weights ignore
    with_camera = replace(config, observation_shapes={**config.observation_shapes, "rgb": [3, 8, 8]})
    student = GaussianStudent(with_camera)
    student.actor_critic.load_state_dict(trained.policy.state_dict())
    with torch.no_grad():
        student.actor_critic.log_std.fill_(-3.0)
    folder = student.save_pretrained(tmp_path / "clone")

    fresh, _ = make_rpd(CountingTeacher())
    log_std = fresh.policy.log_std.detach().clone()
    load_initial_weights(fresh, str(folder), config)
    for name, value in trained.policy.state_dict().items():
        if name != "log_std":
            assert torch.equal(value, fresh.policy.state_dict()[name]), name
    torch.testing.assert_close(fresh.policy.log_std, log_std)  # exploration: this run's setting

    with pytest.raises(UserError, match=r"another shape.*net_arch"):
        load_initial_weights(fresh, str(folder), replace(config, net_arch=[64, 64]))
    with pytest.raises(UserError, match="not an RL student"):
        load_initial_weights(fresh, str(saved_tiny_vla(tmp_path)), config)


def saved_tiny_vla(tmp_path):
    """A saved policy folder of another kind than an RL student."""
    return tiny_vla().save_pretrained(tmp_path / "vla")
