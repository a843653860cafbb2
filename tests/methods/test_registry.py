"""The method registry: every method answers to its name with its config as its YAML's schema, and
a new method needs nothing but its module and its config option to train through `vla-kd
train`'s composition and the shared runner, and to join the pipeline's students."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from vla_kd.cli_support import without_hydra
from vla_kd.errors import UserError
from vla_kd.methods import registry, runner
from vla_kd.methods.distiller import Distiller, RunContext, TrainResult
from vla_kd.pipeline.stages import student_settings
from vla_kd.policies.mlp_bc import ChunkedBCConfig, ChunkedBCPolicy
from vla_kd.policies.pretrained import read_config


def test_the_suites_methods_are_registered_with_their_schemas():
    assert set(registry.names()) == {"bc", "rpd", "ppo", "ceed", "dysl", "align", "opd", "tactile"}
    with initialize_config_module(config_module="vla_kd.configs", version_base="1.3"):
        for name in registry.names():
            cfg = compose(config_name="train", overrides=[f"method={name}"])
            assert cfg.method.name == name
            assert OmegaConf.get_type(cfg.method) is registry.get(name).config_class
    with pytest.raises(UserError, match="did you mean 'dysl'"):
        registry.get("dsyl")


@dataclass
class ToyConfig:
    name: str = "toy"
    width: int = 8  # the student's hidden width


class Toy(Distiller):
    """A method that trains nothing: it builds a small student and hands it back."""

    name = "toy"
    config_class = ToyConfig
    inputs = ()

    def fit(self, ctx: RunContext) -> TrainResult:
        torch.manual_seed(ctx.trainer.seed)
        student = ChunkedBCPolicy(ChunkedBCConfig(state_dim=3, use_image=False, hidden=ctx.config.width))
        return TrainResult(student, {"steps": 0, "width": ctx.config.width}, samples=7)


@pytest.fixture()
def toy_method():
    """The toy method registered as a method module registers itself, with its config option
    stored where configs/method/toy.yaml would be."""
    registry.register(Toy)
    ConfigStore.instance().store(group="method", name="toy", node={"defaults": ["toy_schema", "_self_"]})
    yield
    registry._DISTILLERS.pop("toy")


def test_a_new_method_trains_through_the_shared_runner(toy_method, tmp_path):
    with initialize_config_module(config_module="vla_kd.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["method=toy", "method.width=5", "tracker=none"],
                      return_hydra_config=True)
    without_hydra(cfg)  # as in a run: Hydra's node apart, ${hydra:...} resolvable
    ctx = runner.make_context(cfg, cfg.method, cfg.trainer, tmp_path, tmp_path / "policy")
    summary, result = runner.train(ctx)
    assert result.student.config.hidden == 5 and summary["method"] == "toy"
    assert summary["width"] == 5 and summary["samples"] == 7
    assert json.loads((tmp_path / "train_summary.json").read_text())["policy"] == str(tmp_path / "policy")
    assert read_config(tmp_path / "policy")["config"]["hidden"] == 5


def test_a_new_method_joins_the_pipeline_with_its_own_settings(toy_method):
    with initialize_config_module(config_module="vla_kd.configs", version_base="1.3"):
        cfg = compose(config_name="pipeline", overrides=["students=[ceed,toy]"])
    method, trainer, _ = student_settings(cfg, "toy")  # no node in pipeline.yaml: its YAML's values
    assert method.name == "toy" and method.width == 8 and trainer.steps == 3000
    method, trainer, _ = student_settings(cfg, "ceed")  # pipeline.yaml's tuning
    assert method.exit_max_bin_change == 2 and trainer.steps == 300
