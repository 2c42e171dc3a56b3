#!/usr/bin/env python3
"""Per-primitive time breakdown from ONEDNN_VERBOSE=1 / DNNL_VERBOSE=1 output (stdin).

Works for ours and for the LibTorch peer alike (Debian's libtorch runs its convolutions on the
same system oneDNN). Prints, per (primitive, implementation, problem), the number of calls, total
ms and share of all oneDNN time; pass --per-call N to divide totals by N iterations.
"""
import sys
from collections import defaultdict

per = 1
if "--per-call" in sys.argv:
    per = int(sys.argv[sys.argv.index("--per-call") + 1])
tot = defaultdict(float)
cnt = defaultdict(int)
for line in sys.stdin:
    if not (line.startswith("onednn_verbose,exec") or line.startswith("dnnl_verbose,exec")):
        continue
    f = line.rstrip("\n").split(",")
    # onednn_verbose,exec,cpu,<prim>,<impl>,<prop>,<mds>,<attrs>,<aux>,<problem>,<ms>
    prim, impl, problem, ms = f[3], f[4], f[-2], float(f[-1])
    key = (prim, impl, problem)
    tot[key] += ms
    cnt[key] += 1
all_ms = sum(tot.values())
print(f"total oneDNN time {all_ms / per:.2f} ms per iteration ({per} iterations)")
print("| primitive | implementation | problem | calls/iter | ms/iter | share |")
print("|---|---|---|---|---|---|")
for key, ms in sorted(tot.items(), key=lambda kv: -kv[1]):
    print(f"| {key[0]} | {key[1]} | {key[2]} | {cnt[key] / per:g} | {ms / per:.2f} | {100 * ms / all_ms:.1f}% |")
