"""A TokenVLA teacher's decoders timed at real VLA sizes, beside an RPD student.

The teachers trained here are sized for 2 CPU cores (a 4-layer, 128-wide trunk). What a user
distils from is an OpenVLA-class model: a 7B Llama trunk reading ~256 image tokens. This
benchmark builds the same TokenVLA / SkipVLA code at such sizes with **random weights** (speed
does not depend on the values) and times, on one device and dtype, side by side:

- greedy autoregressive decoding (one trunk forward per action token, KV cache);
- Jacobi decoding with exactly 1, 2 and 4 parallel passes over the token window (what a
  consistency-distilled CEED student needs; how many passes it needs is measured on trained
  models by ``vla-kd bench``, not here: a random model's pass count means nothing);
- DySL's cheap path (the incremental half of the layers replaced by their adapters) against the
  full trunk;
- an RPD student (the Gaussian MLP PPO trains) acting on one CPU thread, as on a robot's computer.

Every call ends with the tokens on the host (a synchronising copy), which is what a controller
needs, so host wall-clock times are whole-call times on an asynchronous device too.
"""

from __future__ import annotations

import copy
import dataclasses
from functools import partial

import numpy as np
import torch

from vla_kd.benchmarks.latency import measure_latency, round_robin_seconds, spread_ms
from vla_kd.nn.jacobi import jacobi_decode
from vla_kd.nn.layer_skip import INCREMENTAL, INFORMATIVE, run_layers
from vla_kd.policies.gaussian_mlp import GaussianStudent, GaussianStudentConfig
from vla_kd.policies.skip_vla import SkipVLA, SkipVLAConfig

#: trunk shapes: the suite's CPU default, SmolLM2-135M (model=token_vla_smollm2) and an
#: OpenVLA-7B-class Llama-2 trunk. patch_grid 16 gives OpenVLA's 256 image tokens; the image
#: encoder stays this suite's small CNN at 64 px (OpenVLA's ViT encoders are not modelled: they
#: run once per call, before the prefill, and the trunk dominates at 7B).
SIZES: dict[str, dict] = {
    "default": dict(hidden=128, layers=4, heads=4, kv_heads=None, intermediate=256, patch_grid=4),
    "smollm2_135m": dict(hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536, patch_grid=16,
                         rope_theta=100000.0),
    "llama_7b": dict(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, patch_grid=16),
}
STATE_DIM = 25  # PushCube-v1's proprio width in the contract (qpos, qvel, TCP pose)
INSTRUCTION = "push the cube to the goal region"


@dataclasses.dataclass
class ScaleRow:
    """One contestant's call latency at one (size, horizon, batch)."""

    size: str
    horizon: int
    batch: int
    decoder: str
    tokens: int
    calls: int
    latency_ms_median: float
    latency_ms_p10: float
    latency_ms_p90: float
    ms_per_action: float
    speedup_vs_ar: float = 1.0


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters of ``model``, shared ones once."""
    return sum(p.numel() for p in model.parameters())


def build_teacher(size: str, horizon: int, device: str, dtype: torch.dtype, image_size: int = 64):
    """A random-weight SkipVLA (a TokenVLA plus adapters; its full plan *is* the TokenVLA) of
    ``SIZES[size]``, every second layer after the first incremental."""

    shape = SIZES[size]
    roles = [INFORMATIVE if i == 0 or i % 2 else INCREMENTAL for i in range(shape["layers"])]
    config = SkipVLAConfig(state_dim=STATE_DIM, horizon=horizon, image_size=image_size,
                           layer_roles=roles, skipping="always", **shape)
    with torch.device(device):
        model = SkipVLA(config)
    return model.to(dtype=dtype).eval()


def observation(
    model, batch: int, device: str, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A random ``(rgb, state, instructions)`` batch on ``device``, the state in the model's
    dtype (values do not change speed)."""
    generator = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    rgb = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=generator)
    state = torch.randn(batch, STATE_DIM, generator=generator)
    dtype = next(model.trunk.parameters()).dtype
    return rgb.to(device), state.to(device, dtype), [INSTRUCTION] * batch


def decoders(model, rgb, state, instructions) -> dict:
    """name -> function() returning host tokens: ar, jacobi_1/2/4 (exactly that many passes),
    dysl_skip."""

    def ar():
        return model.generate_tokens(rgb, state, instructions).cpu()

    def jacobi(passes: int):
        return jacobi_decode(model, rgb, state, instructions, passes=passes).tokens.cpu()

    def skip():
        with run_layers(model.trunk, model.skip_plan()):
            return model.generate_tokens(rgb, state, instructions).cpu()

    out = {"ar": ar}
    passes = [p for p in (1, 2, 4) if p < model.n_action_tokens]
    out.update({f"jacobi_{p}": partial(jacobi, p) for p in passes})
    out["dysl_skip"] = skip
    return out


def with_horizon(model, horizon: int):
    """A view of ``model`` (shared weights) decoding ``horizon`` actions per call: the modules do
    not depend on the chunk length, only the number of action tokens does."""

    view = copy.copy(model)
    view.config = dataclasses.replace(model.config, horizon=horizon)
    return view


def time_teacher(size: str, horizons: list[int], batches: list[int], device: str, dtype: torch.dtype,
                 calls: int, warmup: int) -> tuple[list[ScaleRow], list[dict]]:
    """Rows for every decoder of one random teacher at each (horizon, batch), and facts about
    the model at each."""

    built = build_teacher(size, 1, device, dtype)
    rows, facts = [], []
    for horizon in horizons:
        model = with_horizon(built, horizon)
        for batch in batches:
            rgb, state, instructions = observation(model, batch, device)
            fns = decoders(model, rgb, state, instructions)
            with torch.no_grad():
                # Greedy and the uncapped Jacobi fixed point must agree; in low precision a
                # one-token and a whole-window forward can round apart: reported, not hidden.
                greedy = fns["ar"]()
                fixed = jacobi_decode(model, rgb, state, instructions).tokens.cpu()
                times = round_robin_seconds(fns, calls, warmup)
            got = []
            for name, seconds in times.items():
                median, p10, p90 = spread_ms(seconds)
                got.append(ScaleRow(size, horizon, batch, name, model.n_action_tokens, len(seconds),
                                    median, p10, p90, median / horizon))
            ar = next(r for r in got if r.decoder == "ar").latency_ms_median
            for row in got:
                row.speedup_vs_ar = ar / row.latency_ms_median
            rows += got
            facts.append(dict(
                size=size, horizon=horizon, batch=batch, parameters=parameter_count(model),
                trunk_parameters=parameter_count(model.trunk), prefix_tokens=model.prefix_length,
                greedy_vs_jacobi_fixed_point_agreement=float((greedy == fixed).float().mean()),
                skip_flops_ratio=model.trunk_flops("skip") / model.trunk_flops("full"),
            ))
    if device.startswith("cuda"):  # the peak over all of this size's settings
        for fact in facts:
            fact["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del built, model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return rows, facts


def time_student(student=None, calls: int = 200, warmup: int = 20) -> ScaleRow:
    """An RPD student's mean action on one CPU thread (``student``: a GaussianStudent; default:
    a fresh one of the pipeline's PushCube shape: state 25 + privileged 10, three 256-wide layers)."""

    if student is None:
        student = GaussianStudent(GaussianStudentConfig(
            observation="state", observation_shapes={"state": [STATE_DIM], "privileged": [10]}))
    shapes = student.config.observation_shapes
    obs = {k: np.zeros((1, *shape), np.float32) for k, shape in shapes.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timed = measure_latency({"student": student}, obs, calls, warmup)["student"]
    finally:
        torch.set_num_threads(threads)
    return ScaleRow("rpd_student", timed["actions_per_call"], 1, "mlp_cpu_1_thread", 0, timed["calls"],
                    timed["call_ms_median"], timed["call_ms_p10"], timed["call_ms_p90"], timed["action_ms"])


def markdown(rows: list[ScaleRow], student: ScaleRow | None) -> str:
    """The rows (then the student's) as a markdown table, each against the student per action."""
    lines = ["| size | horizon | batch | decoder | median ms/call | p10-p90 | ms/action | vs AR | "
             "vs RPD student |", "|---|---:|---:|---|---:|---|---:|---:|---:|"]
    for r in rows + ([student] if student else []):
        ratio = f"{r.ms_per_action / student.ms_per_action:.0f}x" if student else ""
        lines.append(
            f"| {r.size} | {r.horizon} | {r.batch} | {r.decoder} | {r.latency_ms_median:.2f} | "
            f"{r.latency_ms_p10:.2f}-{r.latency_ms_p90:.2f} | {r.ms_per_action:.3f} | "
            f"{r.speedup_vs_ar:.2f}x | {ratio} |"
        )
    return "\n".join(lines)
