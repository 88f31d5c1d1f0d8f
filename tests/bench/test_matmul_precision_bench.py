import json

from bench import matmul_precision


def test_the_bench_times_both_dtypes_and_reports_the_cpus_answer(monkeypatch, capsys):
    monkeypatch.setattr(matmul_precision, "SHAPE", (16, 8, 4))
    assert matmul_precision.main(["--repeats", "1", "--json"]) == 0
    (cpu, *_) = json.loads(capsys.readouterr().out)
    assert cpu["device"] == "cpu" and cpu["float32_gflops"] > 0 and cpu["bfloat16_gflops"] > 0
    assert cpu["bfloat16_over_float32"] == cpu["bfloat16_gflops"] / cpu["float32_gflops"]
    assert cpu["native_bfloat16"] == matmul_precision.native_bfloat16(__import__("torch").device("cpu"))
