"""Sharded evaluation: K/N picks every N-th record, each shard folder is claimed for its split, and
the merge of all shards equals the unsharded run (same lines in the same order, same summary)."""

import json

import pytest

from toplens.analyses.cli import main
from toplens.analyses.evaluation.cases import CASES_FILE, read_cases
from toplens.analyses.evaluation.runner import SUMMARY_FILE, run_eval
from toplens.analyses.evaluation.shards import SHARD_FILE, Shard, claim_folder, merge_shards
from tests.analyses.evaluation.test_evaluate import ShiftHparams, _record, shift  # noqa: F401 (fixture)

SUBJECTS = ("trumpet", "guitar", "piano", "violin", "drum")
RECORDS = [_record(i, s) for i, s in enumerate(SUBJECTS)]
HP = {"shift": ShiftHparams()}


def _run(model, records, out):
    return run_eval(model, records, ["shift"], out, hparams=HP, generation_tokens=0, progress=False)


def _sharded(model, out, count, records=RECORDS):
    folders = []
    for k in range(1, count + 1):
        shard, folder = Shard(k, count), out / f"shard{k}"
        claim_folder(folder, shard, len(records))
        _run(model, shard.select(records), folder)
        folders.append(folder)
    return folders


def _comparable(summary):
    return {m: {k: v for k, v in s.items() if k != "seconds_per_edit"} for m, s in summary.items()}


def test_shards_take_every_nth_record_and_cover_the_run_once():
    picks = [Shard(k, 3).select(list(range(8))) for k in (1, 2, 3)]
    assert picks == [(0, 3, 6), (1, 4, 7), (2, 5)]
    assert [Shard(k, 3).size(8) for k in (1, 2, 3)] == [3, 3, 2] and Shard(2, 3).global_index(2) == 7


@pytest.mark.parametrize("text", ["0/2", "3/2", "2", "a/b", "1/0"])
def test_a_bad_shard_is_refused(text):
    with pytest.raises(ValueError, match="K/N|1 <= K <= N"):
        Shard.parse(text)


def test_the_merge_of_every_shard_equals_the_unsharded_run(tiny_hooked, shift, tmp_path):
    whole = _run(tiny_hooked, RECORDS, tmp_path / "whole")
    merged = merge_shards(_sharded(tiny_hooked, tmp_path, 2), tmp_path / "merged")
    strip = lambda lines: [{k: v for k, v in x.items() if k != "seconds"} for x in lines]  # noqa: E731
    assert strip(read_cases(tmp_path / "merged" / CASES_FILE)) == strip(read_cases(tmp_path / "whole" / CASES_FILE))
    assert _comparable(merged.to_json()) == _comparable(whole.to_json())
    on_disk = json.loads((tmp_path / "merged" / SUMMARY_FILE).read_text())
    assert _comparable(on_disk) == _comparable(whole.to_json())


def test_a_missing_shard_or_a_foreign_folder_is_refused(tiny_hooked, shift, tmp_path):
    one, two = _sharded(tiny_hooked, tmp_path, 2)
    with pytest.raises(ValueError, match=r"missing \[2\]"):
        merge_shards([one], tmp_path / "merged")
    with pytest.raises(ValueError, match=r"repeated \[1\]"):
        merge_shards([one, one, two], tmp_path / "merged")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not a shard folder"):
        merge_shards([one, tmp_path / "plain"], tmp_path / "merged")
    with pytest.raises(ValueError, match="one of the shard folders"):
        merge_shards([one, two], one)


def test_shards_with_other_settings_are_refused(tiny_hooked, shift, tmp_path):
    one, two = _sharded(tiny_hooked, tmp_path, 2)
    lines = read_cases(two / CASES_FILE)
    lines[0]["hparams"] = {"precision": "bfloat16"}
    (two / CASES_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(ValueError, match="other hparams"):
        merge_shards([one, two], tmp_path / "merged")


def test_shards_whose_auto_precision_resolved_differently_are_refused(tiny_hooked, shift, tmp_path):
    folders = _sharded(tiny_hooked, tmp_path, 2)
    for folder, ran in zip(folders, ("float32", "bfloat16")):  # precision="auto" on two kinds of device
        lines = [{**line, "as_run": {"precision": ran}} for line in read_cases(folder / CASES_FILE)]
        (folder / CASES_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(ValueError, match=r"other precision \(as run\)"):
        merge_shards(folders, tmp_path / "merged")


def test_a_folder_is_claimed_for_one_split(tmp_path):
    claim_folder(tmp_path / "a", Shard(1, 2), 10)
    claim_folder(tmp_path / "a", Shard(1, 2), 10)  # the same shard resumes
    assert json.loads((tmp_path / "a" / SHARD_FILE).read_text()) == {"index": 1, "count": 2, "records": 10}
    with pytest.raises(ValueError, match="holds shard 1/2 of 10 records; this run is 2/2 of 10"):
        claim_folder(tmp_path / "a", Shard(2, 2), 10)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / CASES_FILE).write_text("")
    with pytest.raises(ValueError, match="unsharded run"):
        claim_folder(tmp_path / "b", Shard(1, 2), 10)


def test_the_cli_refuses_a_bad_shard_before_loading(tmp_path, capsys):
    assert main(["eval", "--shard", "3/2", "--out", str(tmp_path / "o")]) == 2
    assert "3/2" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "nothing"), "--out", str(tmp_path / "m")]) == 2
    assert "not a shard folder" in capsys.readouterr().err
