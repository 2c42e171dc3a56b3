#!/usr/bin/env python3
"""Tables of ours/LibTorch/ONNX Runtime from a bench/run.sh results folder (Google Benchmark JSON).

For every benchmark name <op>/<case>/<backend> it takes the median real time over repetitions
(and the min, to show the spread), pairs `cpu` / `onednn` with `torch` (torch_t<T>.json) and `ort`
(ort_t<T>.json, bench/peers/ort/bench_ort.js: the models only) for the same thread count, and
prints markdown: time, GFLOP/s (or GB/s), fraction of the measured FMA peak for that thread count,
and the speed ratios peer_time / our_time (> 1: ours is faster). The peers' own tables add
ORT/LibTorch (torch_time / ort_time) and ORT's extra variants (e.g. `ort_frozen`).

  bench/compare.py results-dir [--cpu]

--cpu: every time and rate from cpu_time instead of real_time (each program's own CPU time per
iteration; on 1 thread the time it ran, whatever else held the CPUs: the figure to compare when
the machine is shared and real time is mostly waiting for a core).
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


TIME_FIELD = "real_time"


def load(path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):  # missing, or empty (a filter that matched nothing)
        return {}, {}
    runs = defaultdict(list)
    counters = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        name = b["run_name"] if "run_name" in b else b["name"]
        name = name.replace("/real_time", "")
        name = "/".join(p for p in name.split("/") if not p.startswith("min_time") and not p.startswith("iterations"))
        unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b.get("time_unit", "ns")]
        runs[name].append(b[TIME_FIELD] * unit)
        # the counters are rates over real time: keep the amount per iteration (GFLOP, GB,
        # frames), which rate() divides by the median time
        counters[name] = {k: b[k] * b["real_time"] * unit for k in ("GFLOP/s", "GB/s", "fps") if k in b}
    return runs, counters


def rate(c, key, t):
    """Counter `key` (GFLOP/s, GB/s, fps) at time t seconds per iteration, or None."""
    return c[key] / t if key in c else None


def main():
    global TIME_FIELD
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if "--cpu" in sys.argv[1:]:
        TIME_FIELD = "cpu_time"
    out = Path(args[0])
    peak = {}
    if (out / "peak.json").exists():
        runs, cnt = load(out / "peak.json")
        for name, c in cnt.items():
            t = int(name.split("/")[-1])
            peak[t] = rate(c, "GFLOP/s", statistics.median(runs[name]))
    print(f"Measured FMA peak: " + ", ".join(f"{t} thread(s) {g:.1f} GFLOP/s" for t, g in sorted(peak.items())))
    print(f"Times: {TIME_FIELD} (median over repetitions, min in parentheses).")
    for tfile in sorted(out.glob("models_t*.json")):
        t = int(tfile.stem.split("_t")[1])
        for kind in ("ops", "models"):
            ours_runs, ours_c = load(out / f"{kind}_t{t}.json")
            if not ours_runs:
                continue
            torch_runs, torch_c = load(out / f"torch_t{t}.json")
            ort_runs, ort_c = load(out / f"ort_t{t}.json") if kind == "models" else ({}, {})
            print(f"\n### {kind}, {t} thread(s)\n")
            head = "| benchmark | backend | median ms (min) | GFLOP/s | % peak | fps | LibTorch ms | ours/LibTorch speed |"
            rule = "|---|---|---|---|---|---|---|---|"
            if ort_runs:
                head += " ORT ms | ours/ORT speed |"
                rule += "---|---|"
            print(head)
            print(rule)
            for name in ours_runs:
                base, backend = name.rsplit("/", 1)
                med = statistics.median(ours_runs[name])
                c = ours_c[name]
                g = rate(c, "GFLOP/s", med)
                gtxt = f"{g:.1f}" if g else (f"{rate(c, 'GB/s', med):.1f} GB/s" if "GB/s" in c else "")
                pk = f"{100 * g / peak[t]:.0f}%" if g and t in peak else ""
                fps = f"{rate(c, 'fps', med):.1f}" if "fps" in c else ""
                row = f"| {base} | {backend} | {med * 1e3:.2f} ({min(ours_runs[name]) * 1e3:.2f}) | {gtxt} | {pk} | {fps} |"
                for peer_runs, suffix in ((torch_runs, "/torch"), (ort_runs, "/ort")) if ort_runs else ((torch_runs, "/torch"),):
                    pn = base + suffix
                    if pn in peer_runs:
                        pm = statistics.median(peer_runs[pn])
                        row += f" {pm * 1e3:.2f} | **{pm / med:.2f}×** |"
                    else:
                        row += " | |"
                print(row)
            peers = [("LibTorch", torch_runs, torch_c), ("ONNX Runtime", ort_runs, ort_c)]
            for label, runs, cnt in peers:
                if not runs:
                    continue
                print(f"\n{label} alone:\n")
                versus = label != "LibTorch" and torch_runs
                print("| benchmark | backend | median ms (min) | GFLOP/s | % peak | fps |" + (" ORT/LibTorch speed |" if versus else ""))
                print("|---|---|---|---|---|---|" + ("---|" if versus else ""))
                for name in runs:
                    if kind == "ops" and name.startswith(("fusion/", "wav2vec2/")):
                        continue
                    if kind == "models" and not name.startswith(("fusion/", "wav2vec2/")):
                        continue
                    base, backend = name.rsplit("/", 1)
                    med = statistics.median(runs[name])
                    gg = rate(cnt[name], "GFLOP/s", med)
                    fps = f"{rate(cnt[name], 'fps', med):.1f}" if "fps" in cnt[name] else ""
                    row = (f"| {base} | {backend} | {med * 1e3:.2f} ({min(runs[name]) * 1e3:.2f}) | "
                           f"{'' if gg is None else f'{gg:.1f}'} | {'' if gg is None or t not in peak else f'{100 * gg / peak[t]:.0f}%'} | {fps} |")
                    if versus:
                        tn = base + "/torch"
                        row += f" **{statistics.median(torch_runs[tn]) / med:.2f}×** |" if tn in torch_runs else " |"
                    print(row)

if __name__ == "__main__":
    main()
