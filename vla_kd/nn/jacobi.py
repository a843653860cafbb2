"""Jacobi (parallel fixed-point) decoding of a token policy's action tokens, with early exit.

Greedy autoregressive decoding runs one trunk forward per action token. Jacobi decoding
guesses the whole window of ``n`` action tokens, runs *one* forward over it against the
prompt's KV cache, and replaces every token by the argmax predicted from the tokens before it
(the window's logits shifted by one). The first token comes exact from the prompt and pass
``p`` makes token ``p`` exact, so ``n - 1`` passes always reach the greedy output; a pass that
changes nothing proves the window is already the fixed point, which is exactly what greedy
decoding produces (CEED-VLA; Santilli et al. 2023). A consistency-distilled model gets there
in far fewer passes.

The cache holds only the prompt between passes: each pass's window entries are cropped off
right after the forward, so no pass ever attends to a stale guess. The model is any
:class:`~vla_kd.policies.token_policy.TokenPolicy` (its decoding session holds the cache).
Written by hand because no library ships Jacobi decoding of action tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vla_kd.errors import unknown_name

INITS = ("repeat", "middle", "zeros", "random")


@dataclass
class EarlyExit:
    """Relaxed convergence: stop after a pass in which at most ``max_changed`` tokens changed,
    or every changed token moved at most ``max_bin_change`` bins, or after ``max_iterations``
    passes (None: that criterion is off). With all three off, decoding runs to the fixed point."""

    max_changed: int | None = None
    max_bin_change: int | None = None
    max_iterations: int | None = None

    def satisfied(self, old: torch.Tensor, new: torch.Tensor, iterations: int) -> bool:
        changed = new != old
        if self.max_iterations is not None and iterations >= self.max_iterations:
            return True
        if self.max_changed is not None and int(changed.sum(-1).max()) <= self.max_changed:
            return True
        if self.max_bin_change is not None and int((new - old).abs().max()) <= self.max_bin_change:
            return True
        return False


@dataclass
class JacobiResult:
    """Decoded tokens ``(B, n)``, trunk passes over the window, and (if recorded) the window
    after every pass plus the cache length seen between passes."""

    tokens: torch.Tensor
    iterations: int
    converged: bool
    trajectory: list[torch.Tensor] = field(default_factory=list)
    cache_lengths: list[int] = field(default_factory=list)
    prefix_length: int = 0


def initial_window(first: torch.Tensor, n: int, n_bins: int, init: str, generator=None) -> torch.Tensor:
    """The starting guess ``(B, n)``; position 0 is the prompt's own (exact) prediction."""
    batch = len(first)
    if init == "repeat":
        window = first[:, None].repeat(1, n)
    elif init == "middle":
        window = torch.full((batch, n), n_bins // 2, dtype=torch.long, device=first.device)
    elif init == "zeros":
        window = torch.zeros((batch, n), dtype=torch.long, device=first.device)
    elif init == "random":
        window = torch.randint(0, n_bins, (batch, n), generator=generator).to(first.device)
    else:

        raise unknown_name("Jacobi init", init, INITS)
    window[:, 0] = first
    return window


@torch.no_grad()
def jacobi_decode(
    model,
    rgb: torch.Tensor,
    state: torch.Tensor,
    instructions: list[str],
    init: str = "repeat",
    early_exit: EarlyExit | None = None,
    record: bool = False,
    generator=None,
    initial: torch.Tensor | None = None,
    passes: int | None = None,
) -> JacobiResult:
    """Decode ``model.n_action_tokens`` tokens of a token policy by Jacobi iteration (``initial``:
    a given starting window ``(B, n)`` instead of the ``init`` strategy; ``passes``: run exactly
    that many passes whatever the window does, for timing a pass count, not for acting)."""

    session, first_logits = model.start_decoding(rgb, state, instructions)
    prefix_length = session.length
    first = first_logits.argmax(-1)
    n = model.n_action_tokens
    if initial is not None:
        window = initial.clone()
        window[:, 0] = first
    else:
        window = initial_window(first, n, model.config.n_bins, init, generator)
    result = JacobiResult(tokens=window, iterations=0, converged=n == 1, prefix_length=prefix_length)
    if record:
        result.trajectory.append(window.clone())
    while (not result.converged) if passes is None else result.iterations < passes:
        logits = session.step(window[:, :-1])
        session.rewind(n - 1)  # back to the prompt: the next pass must not see this guess
        new = torch.cat([first[:, None], logits.argmax(-1)], dim=1)
        result.iterations += 1
        if record:
            result.trajectory.append(new.clone())
            result.cache_lengths.append(session.length)
        result.converged = bool(torch.equal(new, window)) or result.iterations == n - 1
        old, window = window, new
        if passes is None and early_exit is not None and early_exit.satisfied(old, new, result.iterations):
            break
    result.tokens = window
    return result


@torch.no_grad()
def jacobi_trajectories(model, rgb, state: torch.Tensor, instructions: list[str],
                        initial: torch.Tensor) -> list[torch.Tensor]:
    """Each row's own Jacobi trajectory ``(passes + 1, n)``: from the starting window ``initial``
    ``(B, n)`` (position 0 replaced by the prompt's prediction) through every pass until the pass
    that repeats its fixed point (or ``n - 1`` passes). A row leaves the batch once converged, so
    no pass is spent on rows that are done: a batched :func:`jacobi_decode` runs every row until
    the slowest converges, and its trajectories repeat early rows' fixed points."""
    session, first_logits = model.start_decoding(rgb, state, instructions)
    first = first_logits.argmax(-1)
    n = model.n_action_tokens
    window = initial.clone()
    window[:, 0] = first
    rows = list(range(len(window)))
    windows: list[list[torch.Tensor]] = [[w] for w in window.clone()]
    passes = 0
    while rows:
        logits = session.step(window[:, :-1])
        session.rewind(n - 1)  # back to the prompt: the next pass must not see this guess
        new = torch.cat([first[:, None], logits.argmax(-1)], dim=1)
        passes += 1
        for i, row in enumerate(rows):
            windows[row].append(new[i].clone())
        done = (new == window).all(dim=1) | (passes >= n - 1)
        if done.any():
            keep = torch.nonzero(~done).flatten()
            rows = [rows[i] for i in keep.tolist()]
            if not rows:
                break
            session.keep_rows(keep)
            new, first = new[keep], first[keep]
        window = new
    return [torch.stack(w) for w in windows]
