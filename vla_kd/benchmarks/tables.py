"""The tables and plot points ``vla-kd bench`` writes."""

from __future__ import annotations


def rate_text(s: dict | None) -> str:
    """``62% [52, 71]`` for an evaluation summary, empty for None."""
    return f"{100 * s['success_rate']:.0f}% [{100 * s['ci95'][0]:.0f}, {100 * s['ci95'][1]:.0f}]" if s else ""


def layer_skip_table(rows: list[dict], success: dict) -> str:
    lines = [
        "| chunk | student | latency ms (mean; median [p10, p90]) | speed-up vs AR | trunk MFLOPs/call "
        "| fewer FLOPs vs AR | layers per token | paths full / skip / skip+full | success |",
        "|---:|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        rate = rate_text(success.get(f"{r['decoder']}@chunk{r['chunk']}"))
        p = r["paths"]
        lines.append(
            f"| {r['chunk']} | {r['decoder']} | {r['latency_ms_mean']:.1f}; {r['latency_ms_median']:.1f} "
            f"[{r['latency_ms_p10']:.1f}, {r['latency_ms_p90']:.1f}] | {r['speedup_vs_ar']:.2f}x "
            f"| {r['trunk_mflops_mean']:.1f} | {r['flops_reduction_vs_ar']:.2f}x | {r['layers_mean']:.2f} "
            f"| {p['full']} / {p['skip']} / {p['skip+full']} | {rate} |"
        )
    return "\n".join(lines) + "\n"


def bench_table(rows: list[dict], success: dict) -> str:
    lines = [
        "| chunk | batch | decoder | latency ms (median [p10, p90]) | action tokens/s | speed-up vs AR "
        "| passes mean / max | success |",
        "|---:|---:|---|---|---:|---:|---|---|",
    ]
    for r in rows:
        rate = rate_text(success.get(f"{r['decoder']}@chunk{r['chunk']}"))
        lines.append(
            f"| {r['chunk']} | {r['batch']} | {r['decoder']} | {r['latency_ms_median']:.1f} "
            f"[{r['latency_ms_p10']:.1f}, {r['latency_ms_p90']:.1f}] | {r['tokens_per_s']:.0f} "
            f"| {r['speedup_vs_ar']:.2f}x | {r['iterations_mean']:.1f} / {r['iterations_max']} | {rate} |"
        )
    return "\n".join(lines) + "\n"


def success_latency_points(rows: list[dict], success: dict) -> list[dict]:
    """The evaluated decoders at the smallest batch, as rows for the shared success-vs-latency plot."""
    smallest_batch = min((r["batch"] for r in rows), default=1)
    points = []
    for r in rows:
        s = success.get(f"{r['decoder']}@chunk{r['chunk']}")
        if s is None or r["batch"] != smallest_batch:
            continue
        points.append({
            "name": f"{r['decoder']} (chunk {r['chunk']})",
            "success_rate": s["success_rate"],
            "ci95": s["ci95"],
            # a guided DySL student's cost varies per call, so its mean is the fair figure
            "policy_ms_per_action": r.get("latency_ms_mean", r["latency_ms_median"]),
        })
    return points
