import json

from bench.causal_trace import main


def test_bench_times_both_paths_and_checks_they_agree(tiny_hooked_llama, tmp_path, capsys):
    assert main(["--kinds", "resid,mlp", "--samples", "2", "--window", "2", "--max-rows", "6",
                 "--out-dir", str(tmp_path)], model=tiny_hooked_llama) == 0
    report = json.loads((tmp_path / "bench_causal_trace.json").read_text())
    assert [r["kind"] for r in report["results"]] == ["resid", "mlp"]
    for row in report["results"]:
        assert row["cells"] == report["n_layers"] * report["positions"]
        assert row["ratio"] == row["cell_by_cell_seconds"] / row["batched_seconds"]
        assert row["prefix_cache_used"] is True
        assert row["max_abs_difference"] < 1e-5
    text = (tmp_path / "bench_causal_trace.md").read_text()
    assert "| resid | " in text and "| mlp | " in text and "Target ratio: >= 10x" in text
    assert text in capsys.readouterr().out
