"""Side-by-side timing of a DySL (layer-skipping) student against its full teacher.

The guidance needs a trajectory, so the calls replay demonstration episodes in order: at every
chunk boundary of an episode the policy sees that frame and, as its history, the actions the
demonstration executed just before it. Every contestant (the teacher's greedy decoding, the
student at full depth, the student always skipping, the guided student) walks the same frames,
taking turns call by call; nothing is dropped after the warm-up. A guided call's cost varies
with its path, so speed-ups compare *mean* latencies (throughput) as well as medians.
"""

from __future__ import annotations

import dataclasses
import statistics

import numpy as np
import torch

from vla_kd.benchmarks.decoding import DecoderResult
from vla_kd.benchmarks.latency import round_robin_seconds, spread_ms
from vla_kd.policies.skip_vla import with_settings


@dataclasses.dataclass(kw_only=True)
class SkipResult(DecoderResult):
    """A decoder row (batch 1, one row per call) plus what layer skipping changes.
    ``speedup_vs_ar`` here compares *mean* latencies: a guided student's cost varies per call."""

    latency_ms_mean: float
    trunk_mflops_mean: float
    layers_mean: float  # decoder-layer forwards per action token (adapters not counted)
    paths: dict[str, int]
    flops_reduction_vs_ar: float = 1.0


def replay_frames(
    dataset, horizon: int, history: int, limit: int, cameras: tuple[str, ...] = ("rgb",)
) -> list[tuple[dict, np.ndarray, bool]]:
    """Up to ``limit`` (observation batch of 1 with each of ``cameras``, executed history
    ``(1, history, 7)``, complete) at the chunk boundaries of the dataset's episodes, in order."""
    frames = []
    for episode in np.unique(dataset.episode_index):
        rows = np.flatnonzero(dataset.episode_index == episode)
        for t in range(0, len(rows), horizon):
            item = dataset[int(rows[t])]
            past = dataset.actions[rows[max(0, t - history) : t]]
            padded = np.zeros((history, 7), np.float32)
            if len(past):
                padded[-len(past) :] = past
            obs = {name: item[f"observation.images.{name}"][None] for name in cameras}
            obs.update(state=item["observation.state"][None], instruction=[item["task"]])
            frames.append((obs, padded[None], len(past) == history))
            if len(frames) == limit:
                return frames
    return frames


def standard_views(student) -> dict:
    """The student at full depth, always skipping, and guided by its saved thresholds."""
    return {
        "dysl_full": with_settings(student, skipping="off"),
        "dysl_skip": with_settings(student, skipping="always"),
        "dysl_guided": with_settings(student, skipping="guided"),
    }


def time_layer_skipping(teacher, views: dict, frames: list, warmup: int = 5) -> list[SkipResult]:
    """Time the teacher's greedy decoding (``ar``) and each ``name -> SkipVLA view`` over
    ``frames`` (see the module doc)."""
    student = next(iter(views.values()))
    paths: dict[str, list[str]] = {name: [] for name in ["ar", *views]}
    cursor = {name: 0 for name in paths}

    def call(name: str) -> None:
        obs, history, complete = frames[cursor[name] % len(frames)]
        cursor[name] += 1
        with torch.no_grad():
            if name == "ar":
                teacher.generate_tokens(teacher.camera_input(obs), obs["state"], obs["instruction"])
                paths[name].append("full")
            else:
                view = views[name]
                _, taken = view.decode_with_guidance(
                    view.camera_input(obs), obs["state"], obs["instruction"], history, np.array([complete])
                )
                paths[name].extend(taken)

    calls = len(frames)
    times = round_robin_seconds({name: (lambda n=name: call(n)) for name in paths}, calls, warmup)
    n, layers = student.n_action_tokens, student.trunk_shape.layers
    informative = len(student.informative_layers)
    depth = {"full": layers, "skip": informative, "skip+full": (informative * 7 + layers * n) / n}
    results = []
    for name in paths:
        kept = paths[name][warmup:]
        median, p10, p90 = spread_ms(times[name])
        mean = 1000 * statistics.fmean(times[name])
        flops = [student.trunk_flops(p) for p in kept]
        results.append(
            SkipResult(
                decoder=name,
                chunk=student.config.horizon,
                batch=1,
                calls=len(times[name]),
                latency_ms_median=median,
                latency_ms_p10=p10,
                latency_ms_p90=p90,
                latency_ms_mean=mean,
                tokens_per_s=n / (mean / 1000),
                trunk_mflops_mean=float(np.mean(flops)) / 1e6,
                layers_mean=float(np.mean([depth[p] for p in kept])),
                paths={p: kept.count(p) for p in ("full", "skip", "skip+full")},
                iterations_mean=float(n),
                iterations_max=n,
            )
        )
    ar = results[0]
    for r in results:
        r.speedup_vs_ar = ar.latency_ms_mean / r.latency_ms_mean
        r.flops_reduction_vs_ar = ar.trunk_mflops_mean / r.trunk_mflops_mean
    return results
