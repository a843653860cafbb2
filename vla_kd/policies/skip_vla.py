"""The DySL-VLA student: a token policy (the TokenVLA, or a Hugging Face VLM as ``hf_vla``) whose
incremental decoder layers are bypassed on unimportant control steps.

Built from its teacher (same weights) plus one light adapter per incremental layer. Per call and
per batch row the prior-post guidance (:mod:`vla_kd.policies.skip_guidance`) picks a path:
``full`` (every layer, the teacher's computation), ``skip`` (informative layers and adapters
only), or ``skip+full`` (the cheap path's first action was rejected, so the call is decoded
again at full depth; the wasted work is counted). With ``skipping="off"`` the student computes
exactly what the teacher does. :class:`LayerSkipping` holds all of it over the token-teacher
protocol; :class:`SkipVLA` and :class:`SkipHFVLA` put it on each architecture.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from vla_kd.errors import unknown_name
from vla_kd.nn.layer_skip import INCREMENTAL, INFORMATIVE, SkipAdapter, greedy_decode_flops, run_layers
from vla_kd.policies.hf_vla import HFVLA, HFVLAConfig
from vla_kd.policies.skip_guidance import SkipThresholds, post_rejects, prior_critical
from vla_kd.policies.token_policy import TokenPolicy
from vla_kd.policies.token_vla import TokenVLA, TokenVLAConfig

SKIPPING = ("off", "always", "guided")
#: what a student adds to its teacher's config: per decoder layer its role (informative |
#: incremental); the adapters' rank; how it runs (off = the teacher, always = every step cheap,
#: guided); executed actions the prior reads; the guidance thresholds (from the training demos,
#: skip_guidance.calibrate)
SKIP_FIELDS = [
    ("layer_roles", list[str] | None, None),
    ("adapter_rank", int, 32),
    ("skipping", str, "guided"),
    ("history", int, 4),
    ("prior_threshold", float | None, None),
    ("post_threshold", float | None, None),
]
SkipVLAConfig = dataclasses.make_dataclass("SkipVLAConfig", SKIP_FIELDS, bases=(TokenVLAConfig,))
SkipHFVLAConfig = dataclasses.make_dataclass("SkipHFVLAConfig", SKIP_FIELDS, bases=(HFVLAConfig,))
for _config in (SkipVLAConfig, SkipHFVLAConfig):
    _config.__module__ = __name__  # found by pickle (the evaluation's worker processes)


class LayerSkipping(TokenPolicy):
    """Per-step dynamic layer skipping over any token policy; see the module docstring. Mixed in
    before the architecture's class, whose constructor it extends."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        config, shape = self.config, self.trunk_shape
        roles = config.layer_roles or [INFORMATIVE] * shape.layers
        if len(roles) != shape.layers or set(roles) - {INFORMATIVE, INCREMENTAL}:
            raise ValueError(
                f"layer_roles must give informative|incremental for each of {shape.layers} layers"
            )
        if roles[0] != INFORMATIVE:
            raise ValueError("layer 0 must be informative (the KV cache counts positions with it)")
        if config.skipping not in SKIPPING:
            raise unknown_name("skipping", config.skipping, SKIPPING)
        self.roles = list(roles)
        self.adapters = torch.nn.ModuleDict(
            {
                str(i): SkipAdapter(shape.hidden, config.adapter_rank)
                for i, r in enumerate(roles)
                if r == INCREMENTAL
            }
        )
        self._layers = list(self.decoder_layers)  # the real decoder layers (a plan swaps the list)
        self._history: np.ndarray | None = None  # (B, history, 7) last executed actions per row
        self._seen: np.ndarray | None = None  # (B,) how many actions each row has executed
        self._rows: np.ndarray | None = None  # rows the running act() call predicts for
        self.calls: list[str] = []  # the path of each row's prediction since reset()

    # ------------------------------------------------------------- layer plans
    @property
    def informative_layers(self) -> list[int]:
        return [i for i, r in enumerate(self.roles) if r == INFORMATIVE]

    def full_plan(self) -> list[torch.nn.Module]:
        return list(self._layers)

    def skip_plan(self) -> list[torch.nn.Module]:
        return [
            layer if r == INFORMATIVE else self.adapters[str(i)]
            for i, (layer, r) in enumerate(zip(self._layers, self.roles, strict=True))
        ]

    def skip_logits(self, rgb, state, instructions, tokens) -> torch.Tensor:
        """Teacher-forced logits of the cheap path (informative layers + adapters)."""
        with run_layers(self.layer_container, self.skip_plan()):
            return self.token_logits(rgb, state, instructions, tokens)

    def trunk_flops(self, path: str) -> int:
        """Trunk FLOPs of one call of ``path`` for one row."""
        c, shape, n, prefix = self.config, self.trunk_shape, self.n_action_tokens, self.prefix_length
        rank = c.adapter_rank
        full = ["layer"] * shape.layers
        cheap = ["layer" if r == INFORMATIVE else "adapter" for r in self.roles]
        if path == "full":
            return greedy_decode_flops(shape, full, rank, prefix, 0, n)
        if path == "skip":
            return greedy_decode_flops(shape, cheap, rank, prefix, 0, n)
        # skip+full: the first action's tokens on the cheap path, then a full decode
        return (greedy_decode_flops(shape, cheap, rank, prefix, 0, c.action_dim)
                + greedy_decode_flops(shape, full, rank, prefix, 0, n))

    # ------------------------------------------------------------- decoding
    def _greedy(self, prefix, count: int, plan, run=None):
        """Start (``run=None``, from the encoded ``prefix``) or continue a greedy decode by
        ``count`` tokens under ``plan``; returns the run ``(session, tokens)``."""
        with run_layers(self.layer_container, plan):
            if run is None:
                session, logits = self.start_decoding(None, None, None, prefix=prefix)
                tokens = [logits.argmax(-1)]
                count -= 1
            else:
                session, tokens = run
            for _ in range(count):
                tokens.append(session.step(tokens[-1][:, None])[:, -1].argmax(-1))
        return session, tokens

    def first_actions(self, tokens: torch.Tensor) -> np.ndarray:
        """The first action ``(B, 7)``, clipped to the action range, that ``tokens`` (at least one
        action's worth per row) decode to: what the post test compares with the last executed one."""
        return self.tokens_to_actions(tokens)[:, 0].clamp(-1, 1).numpy()

    @torch.no_grad()
    def decode_with_guidance(
        self, rgb, state, instructions, history: np.ndarray | None = None, complete: np.ndarray | None = None
    ) -> tuple[torch.Tensor, list[str]]:
        """Action tokens ``(B, n)`` and each row's path. ``history`` ``(B, T, 7)``: the actions
        each row executed last (``complete`` False where fewer than T); None: no history."""
        c, batch, n = self.config, len(state), self.n_action_tokens
        if c.skipping == "off" or INCREMENTAL not in self.roles:
            return super().decode_tokens(rgb, state, instructions), ["full"] * batch
        if c.decoding != "greedy":
            raise ValueError("layer skipping decodes greedily; set decoding=greedy")
        thresholds = SkipThresholds(c.prior_threshold, c.post_threshold)
        if c.skipping == "always":
            cheap = np.ones(batch, bool)
        elif history is None:
            cheap = np.zeros(batch, bool)
        else:
            ok = np.ones(batch, bool) if complete is None else np.asarray(complete, bool)
            cheap = ~prior_critical(history, ok, thresholds)
        prefix = self.encode(rgb, state, instructions)[0]
        tokens = torch.zeros(batch, n, dtype=torch.long)
        paths = ["full"] * batch
        rows = np.flatnonzero(cheap)
        if len(rows):
            cheap_prefix = self.prefix_rows(prefix, torch.as_tensor(rows))
            run = self._greedy(cheap_prefix, c.action_dim, self.skip_plan())
            accept = np.ones(len(rows), bool)
            if c.skipping == "guided":
                first = self.first_actions(torch.stack(run[1], dim=1))
                accept = ~post_rejects(history[rows, -1], first, thresholds)
            if accept.any():
                keep = torch.as_tensor(np.flatnonzero(accept))
                session, partial = run
                session.keep_rows(keep)
                rest = n - c.action_dim
                run = self._greedy(None, rest, self.skip_plan(), (session, [t[keep] for t in partial]))
                tokens[rows[accept]] = torch.stack(run[1], dim=1)
            for i, ok in zip(rows, accept, strict=True):
                paths[i] = "skip" if ok else "skip+full"
        full_rows = np.array([i for i in range(batch) if paths[i] != "skip"], dtype=int)
        if len(full_rows):
            full_prefix = self.prefix_rows(prefix, torch.as_tensor(full_rows))
            decoded = self._greedy(full_prefix, n, self.full_plan())[1]
            tokens[full_rows] = torch.stack(decoded, dim=1)
        return tokens, paths

    def decode_tokens(self, rgb, state, instructions) -> torch.Tensor:
        history = complete = None
        if self._rows is not None and self._history is not None:
            history = self._history[self._rows]
            complete = self._seen[self._rows] >= self.config.history
        tokens, paths = self.decode_with_guidance(rgb, state, instructions, history, complete)
        self.calls.extend(paths)
        self.last_iterations = self.n_action_tokens
        return tokens

    # ------------------------------------------------------------- history
    def reset(self) -> None:
        super().reset()
        self._history, self._seen, self.calls = None, None, []

    def reset_envs(self, indices) -> None:
        super().reset_envs(indices)
        if self._seen is not None:
            self._seen[np.asarray(indices, dtype=int)] = 0

    def act(self, obs: dict):
        batch = len(obs["state"])
        if self._history is None or len(self._history) != batch:
            self._history = np.zeros((batch, self.config.history, 7), np.float32)
            self._seen = np.zeros(batch, int)
        self._rows = self.rows_to_predict(batch)
        try:
            action = super().act(obs)
        finally:
            self._rows = None
        self._history = np.roll(self._history, -1, axis=1)
        self._history[:, -1] = action
        self._seen += 1
        return action

    def episode_stats(self) -> dict:
        """Counts since ``reset()``: predictions per path and their trunk FLOPs (summed)."""
        counts = {path: self.calls.count(path) for path in ("skip", "full", "skip+full")}
        return {
            "calls": len(self.calls),
            "calls_skip": counts["skip"],
            "calls_full": counts["full"],
            "calls_skip_full": counts["skip+full"],
            "trunk_flops": sum(n * self.trunk_flops(path) for path, n in counts.items()),
        }


class SkipVLA(LayerSkipping, TokenVLA):
    """The TokenVLA with layer skipping over its Llama trunk."""

    policy_type = "skip_vla"
    config_class = SkipVLAConfig

    @classmethod
    def from_teacher(cls, teacher: TokenVLA, **fields) -> SkipVLA:
        """A student with ``teacher``'s weights (adapters fresh, i.e. plain skipping)."""
        student = cls(SkipVLAConfig(**dataclasses.asdict(teacher.config), **fields))
        missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
        if unexpected or any(not k.startswith("adapters.") for k in missing):
            raise ValueError(f"teacher weights do not fit the student: {unexpected[:3]} {missing[:3]}")
        return student


class SkipHFVLA(LayerSkipping, HFVLA):
    """A Hugging Face VLM (``hf_vla``) with layer skipping over its text decoder's layers."""

    policy_type = "skip_hf_vla"
    config_class = SkipHFVLAConfig

    @classmethod
    def from_teacher(cls, teacher: HFVLA, **fields) -> SkipHFVLA:
        """A student with a copy of ``teacher``'s VLM and bins (adapters fresh)."""
        config = SkipHFVLAConfig(**dataclasses.asdict(teacher.config), **fields)
        student = cls(config, copy.deepcopy(teacher.hf_model), teacher.processor)
        student.load_state_dict(teacher.own_state(), strict=False)
        return student


def skip_student(teacher: TokenPolicy, **fields) -> LayerSkipping:
    """The DySL student of ``teacher`` (a TokenVLA or an hf_vla), with ``fields`` of SKIP_FIELDS."""
    kind = SkipHFVLA if isinstance(teacher, HFVLA) else SkipVLA
    return kind.from_teacher(teacher, **fields)


def with_settings(student, **settings):
    """A view of a SkipVLA (shared weights) with other config settings, e.g. ``skipping``."""
    view = copy.copy(student)
    view.config = dataclasses.replace(student.config, **settings)
    return view
