import pytest

from toplens.core.templates import context_templates


def test_templates_shape_seed_and_cache(tiny_model):
    t1 = context_templates(tiny_model, ((3, 4), (2, 6)), seed=3)
    assert len(t1) == 6 and t1[0] == "{}"
    assert all(t.endswith(". {}") and t.count("{}") == 1 for t in t1[1:])
    assert context_templates(tiny_model, ((3, 4), (2, 6)), seed=3) == t1
    assert context_templates(tiny_model, ((3, 4), (2, 6)), seed=3, use_cache=False) == t1
    assert context_templates(tiny_model, ((3, 4), (2, 6)), seed=4, use_cache=False) != t1


def test_the_relation_prefix_row_leads_with_the_prompts_own_relation_words():
    from toplens.core.templates import relation_prefixed
    base = ("{}", "Some text. {}")
    assert relation_prefixed(base, "{} is located in the continent of") == (*base, "is located in the continent of: {}")
    assert relation_prefixed(base, "The capital of {} is") == (*base, "The capital of is: {}")
    assert relation_prefixed(base, "Q: Where is {}? A:")[-1] == "Q: Where is ? A: {}"
    assert relation_prefixed(base, "{} is", on=False) == base and relation_prefixed(base, "{}") == base
    row = relation_prefixed(base, "{} plays the {x}")[-1]
    assert row.count("{}") == 1 and "{x}" not in row  # braces of the prompt never reach the template


def test_the_reordered_row_puts_the_relation_words_before_the_subject_after_the_bare_prompt():
    from toplens.core.templates import SUBJECT_SLOT, fill, relation_reordered, reordered_rows
    base = ("{}", "Some text. {}")
    rows = relation_reordered(base, "{} is located in the continent of")
    assert rows == ("{}", f"is located in the continent of: {SUBJECT_SLOT} is", "Some text. {}")
    assert reordered_rows(rows) == 1 and reordered_rows(base) == 0
    assert [fill(t, "{} is located in") for t in rows] == [
        "{} is located in", "is located in the continent of: {} is", "Some text. {} is located in"]
    # a prompt that already names the relation first gets no row, nor does a switched-off one
    assert relation_reordered(base, "The capital of {} is") == base
    assert relation_reordered(base, "{} is located in", on=False) == base and relation_reordered(base, "{}") == base
    assert relation_reordered(rows, "{} is located in the continent of") == rows  # never twice
    with pytest.raises(ValueError, match="must follow the bare prompt"):
        reordered_rows((*base, rows[1]))
