"""float32 against bfloat16 matmul throughput on this machine, in one run: the measurement behind
``precision="auto"`` (bfloat16 autocast only where the device multiplies in it natively).

    python bench/matmul_precision.py [--repeats 5] [--json]

The shape is the bundled model's MLP at the fast path's batch ([rows·positions, d_model] by
[d_model, d_mlp] = [2048, 576] by [576, 1536]). Prints GFLOP/s per dtype, their ratio, and what
``native_bfloat16`` says of the CPU (and of the GPU, when one is visible).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from toplens.core.precision import native_bfloat16

SHAPE = (2048, 576, 1536)


def gflops(dtype: torch.dtype, device: str, repeats: int) -> float:
    """Median GFLOP/s of an [m, k] by [k, n] matmul in ``dtype`` on ``device``."""
    m, k, n = SHAPE
    a, b = (torch.randn(*s, device=device).to(dtype) for s in ((m, k), (k, n)))
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / sorted(times)[len(times) // 2] / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        f32, bf16 = (gflops(dt, device, args.repeats) for dt in (torch.float32, torch.bfloat16))
        rows.append({"device": device, "threads": torch.get_num_threads(), "float32_gflops": f32,
                     "bfloat16_gflops": bf16, "bfloat16_over_float32": bf16 / f32,
                     "native_bfloat16": native_bfloat16(torch.device(device))})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| device | threads | float32 GFLOP/s | bfloat16 GFLOP/s | bf16 / f32 | native bfloat16 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['device']} | {r['threads']} | {r['float32_gflops']:.1f} | {r['bfloat16_gflops']:.1f} | "
              f"{r['bfloat16_over_float32']:.3f}× | {r['native_bfloat16']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
