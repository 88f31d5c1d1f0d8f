import json

import pytest

from toplens.analyses.cli import main

# Flags that keep the tiny runs short; the request is one the tiny tokenizers can split.
REQUEST = ["--prompt", "{} plays the", "--subject", "Miles Davis", "--target", " Paris", "--target-true", " trumpet"]
FAST = {"rome": {"layer": 1, "v_num_grad_steps": 3, "context_lengths": [[1, 3]]},
        "top": {"layers": [1], "rel_feat_layer": 1, "v_num_grad_steps1": 3, "v_num_grad_steps2": 3,
                "context_lengths": [[1, 3]]}}


def known_facts(tmp_path) -> str:
    """A two-fact known-facts file the tiny tokenizers can split."""
    facts = [{"known_id": i, "subject": s, "attribute": a, "template": "{} plays the", "prompt": f"{s} plays the",
              "relation_id": "P1303"} for i, (s, a) in enumerate([("Miles Davis", "trumpet"),
                                                                   ("Jimi Hendrix", "guitar")])]
    path = tmp_path / "known.json"
    path.write_text(json.dumps(facts))
    return str(path)


@pytest.fixture
def toplens(monkeypatch, capsys):
    """Run ``toplens ARGV`` in-process, on ``model`` instead of loading ``--model`` when given;
    returns (exit status, stdout, stderr)."""
    def run(argv, model=None):
        if model is not None:
            monkeypatch.setattr("toplens.analyses.cli.common.load_model", lambda name, backend: model)
        status = main(argv)
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run
