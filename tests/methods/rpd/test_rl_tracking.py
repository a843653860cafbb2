"""The executed env-step count saved beside an RL checkpoint, and a resumed run's counter."""

import json
from types import SimpleNamespace

from vla_kd.methods.rpd.tracking import TrackingCallback, env_steps_file, save_env_steps, saved_env_steps


def started(start_env_steps, decisions=10, chunk=8):
    callback = TrackingCallback(None, total=100, save=None, every=50, progress=False, action_chunk=chunk,
                                start_env_steps=start_env_steps)
    callback.model = SimpleNamespace(num_timesteps=decisions)
    callback.on_training_start({}, {})
    return callback


def test_saved_count_round_trips_only_for_its_own_checkpoint(tmp_path):
    checkpoint = tmp_path / "last_sb3.zip"
    save_env_steps(checkpoint, env_steps=61, decisions=10)
    assert saved_env_steps(checkpoint, decisions=10) == 61
    assert saved_env_steps(checkpoint, decisions=12) is None  # the checkpoint moved on after the record
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_or_corrupt_count_falls_back(tmp_path):
    checkpoint = tmp_path / "last_sb3.zip"
    assert saved_env_steps(checkpoint, decisions=10) is None
    env_steps_file(checkpoint).write_text("{not json")
    assert saved_env_steps(checkpoint, decisions=10) is None
    env_steps_file(checkpoint).write_text(json.dumps({"env_steps": 5}))
    assert saved_env_steps(checkpoint, decisions=10) is None


def test_resumed_counter_starts_at_the_saved_count():
    assert started(61).env_steps == 61
    # without a record: decisions x chunk, what a run whose chunks were never cut short executed
    assert started(None).env_steps == 80
