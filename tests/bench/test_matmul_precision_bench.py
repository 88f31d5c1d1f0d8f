import itertools
import json

import torch

from bench import matmul_precision


def test_gflops_count_two_flops_per_multiply_add_over_the_median_time(monkeypatch):
    monkeypatch.setattr(matmul_precision, "SHAPE", (16, 8, 4))
    clock = itertools.count(step=0.5)  # every timed matmul takes 0.5 s on this clock
    monkeypatch.setattr(matmul_precision.time, "perf_counter", lambda: next(clock))
    assert matmul_precision.gflops(torch.float32, "cpu", 3) == 2 * 16 * 8 * 4 / 0.5 / 1e9


def test_the_bench_times_both_dtypes_and_reports_the_cpus_answer(monkeypatch, capsys):
    monkeypatch.setattr(matmul_precision, "SHAPE", (16, 8, 4))
    assert matmul_precision.main(["--repeats", "1", "--json"]) == 0
    (cpu, *_) = json.loads(capsys.readouterr().out)
    assert cpu["device"] == "cpu" and cpu["float32_gflops"] > 0 and cpu["bfloat16_gflops"] > 0
    assert cpu["native_bfloat16"] == matmul_precision.native_bfloat16(torch.device("cpu"))
    assert matmul_precision.main(["--repeats", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| device |") and table[2].startswith("| cpu |")
