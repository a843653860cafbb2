import json

from omegaconf import OmegaConf

from vla_kd.tracking import NullTracker, Tracker, make_tracker


def test_tracker_writes_local_files_and_offline_wandb(tmp_path):
    tracker = make_tracker(OmegaConf.create({"backend": "wandb", "mode": "offline"}), tmp_path, {"a": 1})
    assert isinstance(tracker, Tracker)
    tracker.log({"eval/success_rate": 0.5}, step=1)
    tracker.log_table("eval/results", [{"task": "t", "success_rate": 0.5}])
    tracker.summary({"success_rate": 0.5})
    tracker.finish()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"step": 1, "eval/success_rate": 0.5}
    assert (tmp_path / "results.csv").read_text().splitlines()[0] == "task,success_rate"
    assert json.loads((tmp_path / "summary.json").read_text()) == {"success_rate": 0.5}
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_tracker_none_writes_nothing(tmp_path):
    tracker = make_tracker(OmegaConf.create({"backend": "none"}), tmp_path)
    assert isinstance(tracker, NullTracker)
    tracker.log({"x": 1})
    tracker.summary({"x": 1})
    tracker.finish()
    assert list(tmp_path.iterdir()) == []
