"""On-policy distillation (method=opd): the β schedule, labels at exactly the student's decision
states, the aggregate as a growing LeRobot dataset, and a short run on PushCube."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import requires_maniskill, run_cli, tiny_token_vla

from vla_kd.config_checks import ConfigValueError
from vla_kd.data.lerobot_dataset import LeRobotDataset
from vla_kd.errors import UserError
from vla_kd.methods.bc import camera_batch
from vla_kd.methods.opd.aggregate import Aggregate
from vla_kd.methods.opd.config import OPDConfig
from vla_kd.methods.opd.rollouts import (
    EpisodeDecisions,
    check_pair,
    label_gap,
    label_round,
    roll_out_episode,
)
from vla_kd.methods.opd.token_objective import TokenOnPolicyDistillation, sample_tokens
from vla_kd.methods.opd.training_data import SharedKeys, training_mix
from vla_kd.policies.mlp_bc import ChunkedBCConfig, ChunkedBCPolicy

TASK = "maniskill/PushCube-v1"
EPISODES = 20


def test_beta_decays_geometrically_and_seed_ranges_stay_apart():
    config = OPDConfig(beta_start=0.8, beta_decay=0.5)
    assert [config.beta(r) for r in range(4)] == pytest.approx([0.8, 0.4, 0.2, 0.1])
    assert OPDConfig(beta_start=0.0).beta(0) == 0.0
    with pytest.raises(ConfigValueError, match="overlaps the training seeds"):
        OPDConfig(seed=49_990, rounds=2, episodes_per_round=10)
    with pytest.raises(ConfigValueError):
        OPDConfig(beta_decay=1.5)


class CountingEnv(gym.Env):
    """A deterministic stand-in task: the state is (step, seed, last action's sum), the frame
    encodes the step; it records every action it was given."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Dict({})
        self.action_space = gym.spaces.Box(-1, 1, (7,))
        self.executed: list[np.ndarray] = []

    def _obs(self) -> dict:
        state = np.array([self.t, self.seed, self.last], np.float32)
        return {
            "rgb": np.full((8, 8, 3), self.t, np.uint8),
            "state": state,
            "privileged": np.ones(2, np.float32),
        }

    def reset(self, seed=None, options=None):
        self.t, self.seed, self.last = 0, seed, 0.0
        return self._obs(), {"success": False, "instruction": "count"}

    def step(self, action):
        self.executed.append(np.asarray(action))
        self.t, self.last = self.t + 1, float(np.sum(action))
        return self._obs(), 0.0, False, False, {"success": self.t == 5, "instruction": "count"}


def state_policy(horizon: int, seed: int) -> ChunkedBCPolicy:
    torch.manual_seed(seed)
    return ChunkedBCPolicy(ChunkedBCConfig(state_dim=3, horizon=horizon, use_image=False, hidden=16)).eval()


def test_labels_are_the_teachers_chunks_at_exactly_the_student_decision_states():
    env = CountingEnv()
    student, teacher = state_policy(2, 0), state_policy(4, 1)
    record = roll_out_episode(env, student, teacher, seed=7, beta=0.5, horizon=2, max_steps=9)
    # The student executes 2 actions per decision: decisions at steps 0, 2, 4, 6, 8.
    assert [int(s[0]) for s in record.states] == [0, 2, 4, 6, 8]
    assert [int(f[0, 0, 0]) for f in record.images["rgb"]] == [0, 2, 4, 6, 8]
    assert record.success and record.env_steps == 9
    teacher_ran = [chosen is None for chosen in record.student_chunks]
    assert (
        sum(teacher_ran) == record.teacher_decisions and 0 < record.teacher_decisions < 5
    )  # this seed's draw
    asked = label_round(teacher, [record], horizon=2, batch_size=3)
    assert asked == 5 - record.teacher_decisions
    states = np.stack(record.states)
    expected = teacher.predict_action_chunk({"state": states, "instruction": ["count"] * 5})[:, :2]
    np.testing.assert_allclose(np.stack(record.labels), expected, atol=1e-6)
    # What ran at each decision: the teacher's label where it acted, the student's chunk elsewhere.
    executed = np.stack(env.executed)
    for i, chosen in enumerate(record.student_chunks):
        ran = expected[i] if chosen is None else chosen
        np.testing.assert_allclose(
            executed[2 * i : 2 * i + 2], ran[: len(executed[2 * i : 2 * i + 2])], atol=1e-6
        )
    assert label_gap([record]) > 0
    # Never privileged: the student's frames carry no privileged key; the poses are kept apart,
    # one per decision, as training targets only.
    assert set(record.images) == {"rgb"}
    assert np.stack(record.env_states).shape == (5, 2)


def decisions(seed: int, length: int, horizon: int = 3) -> EpisodeDecisions:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 150, 32)[None, :, None, None] + np.zeros((length, 32, 32, 3))
    frames = (ramp + 10 * np.arange(length)[:, None, None, None] + 20 * seed).astype(
        np.uint8
    )  # smooth: a codec keeps it
    return EpisodeDecisions(
        seed=seed,
        instruction="push the cube",
        success=bool(seed % 2),
        images={"rgb": list(frames)},
        states=list(rng.normal(size=(length, 5)).astype(np.float32)),
        labels=list(rng.uniform(-1, 1, (length, horizon, 7)).astype(np.float32)),
        student_chunks=[None] * length,
    )


def test_the_aggregate_grows_round_by_round_and_round_trips_as_a_lerobot_dataset(tmp_path, tiny_datasets):
    aggregate = Aggregate(tmp_path / "aggregate")
    first = [decisions(0, 4), decisions(1, 6)]
    aggregate.add(first, 0)
    aggregate.write(horizon=3)
    data = LeRobotDataset(tmp_path / "aggregate", action_horizon=2)
    assert len(data) == 10 and aggregate.states == 10
    np.testing.assert_array_equal(data.states, np.concatenate([np.stack(e.states) for e in first]))
    item = data[5]
    np.testing.assert_array_equal(item["action"].numpy(), first[1].labels[1][:2])
    assert not item["action_is_pad"].any() and item["task"] == "push the cube"
    frame = item["observation.images.rgb"].numpy().astype(float)
    assert np.abs(frame - first[1].images["rgb"][1]).mean() < 3  # through a video codec
    aggregate.add([decisions(2, 5)], 1)
    aggregate.write(horizon=3)
    grown = LeRobotDataset(tmp_path / "aggregate", action_horizon=3)
    assert len(grown) == 15 and aggregate.rounds == [0, 0, 1]
    np.testing.assert_array_equal(grown.chunk_labels[10:], np.stack(decisions(2, 5).labels))
    with pytest.raises(Exception, match="4 were asked"):
        LeRobotDataset(tmp_path / "aggregate", action_horizon=4)
    unlabelled = decisions(3, 2)
    unlabelled.labels[1] = None
    with pytest.raises(ValueError, match="labelled"):
        aggregate.add([unlabelled], 2)
    # With the demonstrations: one training set of the keys both have.
    demos = LeRobotDataset(tiny_datasets(image_size=32, state_dim=5), action_horizon=3)
    both = SharedKeys([demos, grown])
    assert len(both) == len(demos) + 15
    assert set(both[0]) == set(both[len(both) - 1])
    assert "observation.environment_state" not in both[0]  # these rounds had no poses
    assert len(training_mix(demos, grown, 0.0)) == len(both)  # each frame once
    half = training_mix(demos, grown, 0.5)  # the aggregate repeated to about half the frames
    assert abs((len(half) - len(demos)) / len(half) - 0.5) <= 15 / len(half)
    assert training_mix(None, grown, 0.5) is grown


def test_poses_recorded_at_the_decisions_reach_the_aggregate_as_auxiliary_targets(tmp_path, tiny_datasets):
    episodes = [decisions(0, 4), decisions(1, 3)]
    for e in episodes:
        e.env_states = [np.full(6, i + 10 * e.seed, np.float32) for i in range(len(e))]
    aggregate = Aggregate(tmp_path / "aggregate")
    aggregate.add(episodes, 0)
    aggregate.write(horizon=3)
    data = LeRobotDataset(tmp_path / "aggregate", action_horizon=3)
    np.testing.assert_array_equal(data[5]["observation.environment_state"].numpy(), np.full(6, 11.0))
    demos = LeRobotDataset(tiny_datasets(image_size=32, state_dim=5, env_state_dim=6), action_horizon=3)
    both = SharedKeys([demos, data])
    assert (
        "observation.environment_state" in both[0] and "observation.environment_state" in both[len(both) - 1]
    )


def train_bc(demos, tmp_path, name: str, *overrides: str, timeout: float = 900) -> None:
    """``vla-kd train`` (behaviour cloning) on ``demos`` into ``tmp_path/name``; its run folder
    is ``tmp_path/<name>_run``."""
    proc = run_cli(
        "train",
        f"dataset={demos}",
        *overrides,
        f"output={tmp_path / name}",
        f"hydra.run.dir={tmp_path / f'{name}_run'}",
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@requires_maniskill
@pytest.mark.maniskill
@pytest.mark.slow
def test_a_short_opd_run_beats_its_starting_student_on_pushcube(pushcube_demos, tmp_path):
    # The teacher: the BC recipe of test_bc_beats_random (85-95% there). The starting student:
    # the same architecture after 150 steps without the auxiliary head. OPD then rolls the
    # student out (β 0.5, then 0.25) and the teacher labels, in batches, every state it reached.
    held_out = [
        f"eval.env={TASK}",
        "eval.seed=100000",
        f"eval.episodes={EPISODES}",
        "eval.max_episode_steps=80",
    ]
    common = ["model.horizon=8", "trainer.batch_size=32", "trainer.progress=false", "tracker=none"]
    train_bc(
        pushcube_demos, tmp_path, "teacher", "trainer.steps=1500", "model.aux_privileged_weight=1.0", *common
    )
    train_bc(pushcube_demos, tmp_path, "start", "trainer.steps=150", *common, *held_out)
    start = json.loads((tmp_path / "start_run" / "train_summary.json").read_text())["eval/success_rate"]
    run_dir = tmp_path / "opd_run"
    opd = [
        "method.rounds=2",
        "method.episodes_per_round=12",
        "method.steps_per_round=800",
        "method.validation_episodes=6",
        "method.max_episode_steps=80",
    ]
    proc = run_cli(
        "train",
        "method=opd",
        f"teacher={tmp_path / 'teacher'}",
        f"env={TASK}",
        f"student={tmp_path / 'start'}",
        f"dataset={pushcube_demos}",
        *opd,
        *common,
        *held_out,
        f"output={tmp_path / 'opd'}",
        f"hydra.run.dir={run_dir}",
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "train_summary.json").read_text())
    rounds = json.loads((run_dir / "rounds.json").read_text())
    assert [r["beta"] for r in rounds] == [0.5, 0.25]
    assert rounds[1]["aggregate_states"] > rounds[0]["aggregate_states"] > 0
    assert summary["teacher_queries"] == rounds[1]["aggregate_states"]  # one label per decision
    assert (run_dir / "success_vs_round.png").is_file()
    assert (run_dir / "aggregate" / "meta" / "info.json").is_file()
    # More successes in 20 episodes than where it started: 5% -> 15% with 8 episodes and 500 steps
    # per round, 0% -> 15% and 5% -> 15% with these rounds (docs/experiments/opd.md).
    assert summary["eval/success_rate"] > start, (start, summary["eval/success_rate"], rounds)
    assert rounds[0]["label_gap"] > 0  # the student's own chunks against the teacher's labels


class StatefulTeacher:
    """A stand-in for the scripted experts: memory per episode, one action per call."""

    name = "stateful"
    uses_privileged = True

    def __init__(self) -> None:
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0

    def act(self, obs: dict) -> np.ndarray:
        assert "privileged" in obs  # it may read what the student may not
        self.calls += 1
        return np.full((1, 7), self.calls / 100, np.float32)


def test_a_teacher_with_memory_labels_online_at_every_step_one_action_at_a_time():
    env, teacher = CountingEnv(), StatefulTeacher()
    student = state_policy(1, 0)
    record = roll_out_episode(env, student, teacher, seed=3, beta=0.5, horizon=1, max_steps=6)
    # It saw every step (its label at step t is its t+1-th call) and labelled every decision.
    assert [float(label[0, 0]) for label in record.labels] == pytest.approx(
        [0.01 * (t + 1) for t in range(6)]
    )
    assert teacher.calls == 6
    with pytest.raises(UserError, match=r"model\.horizon=1"):
        check_pair(state_policy(2, 0), teacher, 2)
    with pytest.raises(UserError, match="4-action chunks"):
        check_pair(state_policy(8, 0), state_policy(4, 1), 8)


def test_token_objective_pulls_a_smaller_student_to_its_teacher_along_its_own_samples(tiny_datasets):
    teacher = tiny_token_vla(0, hidden=64, layers=2)
    student = tiny_token_vla(
        1, sharpen=False, fit_tokenizer=False, hidden=32, layers=1, heads=2, intermediate=64
    )
    student.tokenizer.load_state_dict(teacher.tokenizer.state_dict())  # one meaning per bin
    data = LeRobotDataset(tiny_datasets(episodes=2, frames=4), action_horizon=2)
    batch = torch.utils.data.default_collate([data[i] for i in range(8)])
    for divergence in ("forward_kl", "hard_ce"):  # the options run
        assert torch.isfinite(TokenOnPolicyDistillation(student, teacher, divergence).loss(batch, 0)[0])
    method = TokenOnPolicyDistillation(student.train(), teacher, "reverse_kl")
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    torch.manual_seed(0)
    first = method.loss(batch, 0)[0].item()
    for step in range(60):
        loss, logs = method.loss(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert logs["losses/token_reverse_kl"] < 0.3 * first, (first, logs)
    assert {"train/student_token_entropy", "train/greedy_agreement"} <= set(logs)
    # A student identical to its teacher: nothing to learn.
    twin = TokenOnPolicyDistillation(tiny_token_vla(0), teacher, "reverse_kl")
    assert abs(twin.loss(batch, 0)[0].item()) < 1e-5
    # Sampling at temperature 0 is greedy decoding.
    rgb = teacher.camera_input(camera_batch(batch, teacher.cameras))
    greedy = sample_tokens(teacher, rgb, batch["observation.state"], list(batch["task"]), temperature=0)
    assert torch.equal(greedy, teacher.generate_tokens(rgb, batch["observation.state"], list(batch["task"])))
    other_bins = tiny_token_vla(2)
    other_bins.tokenizer.fit(torch.rand(50, 7))
    with pytest.raises(UserError, match="share its teacher's action bins"):
        TokenOnPolicyDistillation(other_bins, teacher)


@requires_maniskill
@pytest.mark.maniskill
@pytest.mark.slow
def test_a_resumed_run_continues_after_its_last_finished_round(pushcube_demos, tmp_path):
    # A toy teacher (4 steps of BC) and a fresh student that learns the demos first; one round,
    # then the same run folder with trainer.resume=true and two rounds: only round 1 runs.
    tiny = ["trainer.batch_size=8", "trainer.progress=false", "tracker=none", "model.hidden=32"]
    train_bc(pushcube_demos, tmp_path, "teacher", "model.horizon=4", "trainer.steps=4", *tiny, timeout=600)
    run_dir = tmp_path / "opd_run"
    opd = [
        "train",
        "method=opd",
        f"teacher={tmp_path / 'teacher'}",
        f"env={TASK}",
        f"dataset={pushcube_demos}",
        "model.horizon=4",
        "trainer.steps=2",
        "method.demo_steps=2",
        "method.episodes_per_round=1",
        "method.steps_per_round=2",
        "method.validation_episodes=1",
        "method.max_episode_steps=8",
        "method.workers=1",
        *tiny,
        "eval.episodes=1",
        "eval.max_episode_steps=8",
        f"output={tmp_path / 'opd'}",
        f"hydra.run.dir={run_dir}",
    ]
    proc = run_cli(*opd, "method.rounds=1", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = json.loads((run_dir / "rounds.json").read_text())
    proc = run_cli(*opd, "method.rounds=2", "trainer.resume=true", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rounds = json.loads((run_dir / "rounds.json").read_text())
    assert rounds[0] == first[0] and [r["round"] for r in rounds] == [0, 1]
    assert rounds[1]["aggregate_states"] > rounds[0]["aggregate_states"]
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["steps"] == 2 + 2 + 2  # the demos' and round 0's steps were counted once
    (run_dir / "opd_checkpoint" / "state.pt").write_bytes(b"not a checkpoint")
    proc = run_cli(*opd, "method.rounds=3", "trainer.resume=true", timeout=600)
    assert proc.returncode != 0 and "cannot resume" in proc.stderr and "Traceback" not in proc.stderr


def test_rounds_are_saved_with_a_token_students_entropy_panel(tmp_path):
    from PIL import Image

    from vla_kd.methods.opd.progress import save_rounds

    rows = [
        {
            "round": r,
            "rollout_success": 0.2 * r,
            "val_success": 0.1 * r,
            "teacher_queries_total": 100 * (r + 1),
            "train/student_token_entropy": 2.0 - 0.3 * r,
            "train/teacher_token_entropy": 1.0,
        }
        for r in range(3)
    ]
    wide = Image.open(save_rounds(rows, tmp_path)).size[0]
    assert json.loads((tmp_path / "rounds.json").read_text()) == rows
    plain = [{k: v for k, v in r.items() if "entropy" not in k} for r in rows]
    assert Image.open(save_rounds(plain, tmp_path)).size[0] < wide  # no entropy: two panels
