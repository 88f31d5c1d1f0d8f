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
