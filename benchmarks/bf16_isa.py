"""bf16 against fp32 matrix products on this CPU, with and without its native bf16 instructions.

Usage::

    python benchmarks/bf16_isa.py          # ~1 minute, one thread

bf16 autocast (``--bf16``) only pays where the CPU multiplies bf16 natively (x86: AVX512_BF16
or AMX, e.g. Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later; Arm: the BF16
extension, e.g. AWS Graviton3). To see what happens on a CPU without it, each row runs in a
fresh process with oneDNN (torch's CPU matmul library for bf16) capped at an older instruction
set through ``ONEDNN_MAX_CPU_ISA``: ``DEFAULT`` (what this CPU has), ``AVX512_CORE`` (AVX-512
without bf16) and ``AVX2``. Each row times the forward and backward matrix products of one
1200-1200 MLP layer at batch 128 (the paper teacher's shape), fp32 and bf16, best of 5 trials
of 50 steps. Prints a table; ``--json`` writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ISAS = ("DEFAULT", "AVX512_CORE", "AVX2")

MEASURE = r"""
import json, time, torch
torch.set_num_threads(1)
x = torch.randn(128, 1200)
w = torch.randn(1200, 1200)
g = torch.randn(128, 1200)
def step(dtype):
    a, b, c = x.to(dtype), w.to(dtype), g.to(dtype)
    def run():
        for _ in range(50):
            a @ b.t(); c @ b; c.t() @ a  # forward, grad of the input, grad of the weight
    run()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter(); run(); best = min(best, time.perf_counter() - t)
    return best / 50
fp32, bf16 = step(torch.float32), step(torch.bfloat16)
print(json.dumps({"fp32_ms": 1e3 * fp32, "bf16_ms": 1e3 * bf16,
                  "mkldnn_bf16": torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                  "cpu_capability": torch.backends.cpu.get_cpu_capability()}))
"""


def measure(isa: str) -> dict:
    """One row, in a fresh process whose oneDNN is capped at ``isa``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa != "DEFAULT":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    out = subprocess.run(
        [sys.executable, "-c", MEASURE], env=env, check=True, capture_output=True, text=True
    ).stdout
    row = json.loads(out.strip().splitlines()[-1])
    return {"oneDNN ISA cap": isa, **row, "bf16 speed-up": row["fp32_ms"] / row["bf16_ms"]}


def main(argv: list[str] | None = None) -> int:
    """Measure each ISA cap, print the table and maybe write it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    rows = [measure(isa) for isa in ISAS]
    print(f"load average {load:.2f}; one thread; 1200x1200 layer at batch 128, fwd + bwd products")
    print("| oneDNN ISA cap | fp32 ms | bf16 ms | bf16 speed-up |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['oneDNN ISA cap']} | {row['fp32_ms']:.2f} | {row['bf16_ms']:.2f} "
            f"| {row['bf16 speed-up']:.2f}x |"
        )
    if args.json:
        args.json.write_text(json.dumps({"load_average": load, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
