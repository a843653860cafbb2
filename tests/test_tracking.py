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


def test_the_runs_of_one_experiment_share_its_wandb_group(tmp_path):
    groups = []
    for stage in ("train_teacher", "train_ceed"):
        tracker = make_tracker(OmegaConf.create({"backend": "wandb"}), tmp_path / stage, job_type=stage,
                               group="pipeline-2026-12-06_10-00-00")
        groups.append((tracker._wandb_run.group, tracker._wandb_run.job_type))
        tracker.finish()
    assert groups == [("pipeline-2026-12-06_10-00-00", "train_teacher"),
                      ("pipeline-2026-12-06_10-00-00", "train_ceed")]
