#!/usr/bin/env python3
"""Tables of ours/LibTorch from a bench/run.sh results folder (Google Benchmark JSON).

For every benchmark name <op>/<case>/<backend> it takes the median real time over repetitions
(and the min, to show the spread), pairs `cpu` / `onednn` with `torch` for the same thread count,
and prints markdown: time, GFLOP/s (or GB/s), fraction of the measured FMA peak for that thread
count, and the speed ratio torch_time / our_time (> 1: ours is faster).
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


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
        runs[name].append(b["real_time"] * unit)
        counters[name] = {k: b[k] for k in ("GFLOP/s", "GB/s", "fps") if k in b}
    return runs, counters


def main():
    out = Path(sys.argv[1])
    peak = {}
    if (out / "peak.json").exists():
        runs, cnt = load(out / "peak.json")
        for name, c in cnt.items():
            t = int(name.split("/")[-1])
            peak[t] = c["GFLOP/s"]
    print(f"Measured FMA peak: " + ", ".join(f"{t} thread(s) {g:.1f} GFLOP/s" for t, g in sorted(peak.items())))
    for tfile in sorted(out.glob("models_t*.json")):
        t = int(tfile.stem.split("_t")[1])
        for kind in ("ops", "models"):
            ours_runs, ours_c = load(out / f"{kind}_t{t}.json")
            if not ours_runs:
                continue
            torch_runs, torch_c = ({}, {})
            if (out / f"torch_t{t}.json").exists():
                torch_runs, torch_c = load(out / f"torch_t{t}.json")
            print(f"\n### {kind}, {t} thread(s)\n")
            print("| benchmark | backend | median ms (min) | GFLOP/s | % peak | fps | LibTorch ms | ours/LibTorch speed |")
            print("|---|---|---|---|---|---|---|---|")
            for name in ours_runs:
                base, backend = name.rsplit("/", 1)
                med = statistics.median(ours_runs[name])
                c = ours_c[name]
                g = c.get("GFLOP/s")
                gtxt = f"{g * statistics.mean(ours_runs[name]) / med:.1f}" if g else (f"{c['GB/s']:.1f} GB/s" if "GB/s" in c else "")
                pk = f"{100 * g * statistics.mean(ours_runs[name]) / med / peak[t]:.0f}%" if g and t in peak else ""
                fps = f"{c['fps'] * statistics.mean(ours_runs[name]) / med:.1f}" if "fps" in c else ""
                tn = base + "/torch"
                if tn in torch_runs:
                    tm = statistics.median(torch_runs[tn])
                    ttxt = f"{tm * 1e3:.2f}"
                    ratio = f"**{tm / med:.2f}×**"
                else:
                    ttxt, ratio = "", ""
                print(f"| {base} | {backend} | {med * 1e3:.2f} ({min(ours_runs[name]) * 1e3:.2f}) | {gtxt} | {pk} | {fps} | {ttxt} | {ratio} |")
            if torch_runs:
                print("\nLibTorch alone:\n")
                print("| benchmark | median ms (min) | GFLOP/s | % peak |")
                print("|---|---|---|---|")
                for name in torch_runs:
                    if kind == "ops" and name.startswith(("fusion/", "wav2vec2/")):
                        continue
                    if kind == "models" and not name.startswith(("fusion/", "wav2vec2/")):
                        continue
                    med = statistics.median(torch_runs[name])
                    g = torch_c[name].get("GFLOP/s")
                    gg = g * statistics.mean(torch_runs[name]) / med if g else None
                    print(f"| {name.rsplit('/', 1)[0]} | {med * 1e3:.2f} ({min(torch_runs[name]) * 1e3:.2f}) | "
                          f"{'' if gg is None else f'{gg:.1f}'} | {'' if gg is None or t not in peak else f'{100 * gg / peak[t]:.0f}%'} |")


if __name__ == "__main__":
    main()
