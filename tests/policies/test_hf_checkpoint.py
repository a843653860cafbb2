"""Loading HF-format VLA checkpoints from a local folder, and OpenVLA's action decoding."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vla_kd.errors import UserError
from vla_kd.policies.hf_checkpoint import check_checkpoint, load_hf_vla, openvla_tokens_to_actions

transformers = pytest.importorskip("transformers")


@pytest.fixture()
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=64)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(tmp_path / "vla")
    return model, tmp_path / "vla"


def test_loads_a_saved_checkpoint_exactly(tiny_checkpoint):
    model, folder = tiny_checkpoint
    loaded = load_hf_vla(folder)
    assert type(loaded).__name__ == "LlamaForCausalLM" and not loaded.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name


def test_clear_errors_for_broken_folders(tiny_checkpoint, tmp_path):
    _, folder = tiny_checkpoint
    with pytest.raises(UserError, match="does not exist"):
        check_checkpoint(tmp_path / "missing")
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated download
    with pytest.raises(UserError, match="corrupt"):
        check_checkpoint(folder)
    weights.unlink()
    with pytest.raises(UserError, match="no \\*\\.safetensors"):
        check_checkpoint(folder)
    index = {"weight_map": {"w": "shard-1.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match=r"shard-1\.safetensors"):
        check_checkpoint(folder)
    (folder / "config.json").write_text("{oops")
    with pytest.raises(UserError, match=r"config\.json' is corrupt"):
        check_checkpoint(folder)


def test_openvla_decoding_matches_hand_computation():
    vocab = 1000
    q01, q99 = np.full(2, -2.0), np.full(2, 2.0)
    # id 999 is bin 0, whose centre is -1 + 1/255; id 745 is bin 254 (the last centre).
    actions = openvla_tokens_to_actions(np.array([999, 745]), vocab, q01, q99)
    np.testing.assert_allclose(actions, [2 * (-1 + 1 / 255), 2 * (1 - 1 / 255)])
    # ids beyond the action vocabulary clamp to the end bins; masked dims stay normalised.
    clamped = openvla_tokens_to_actions(np.array([10, 999]), vocab, q01, q99, mask=[True, False])
    np.testing.assert_allclose(clamped, [2 * (1 - 1 / 255), -1 + 1 / 255])
