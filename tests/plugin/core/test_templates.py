from toplens.core.templates import context_templates


def test_templates_shape_seed_and_cache(tiny_model):
    t1 = context_templates(tiny_model, ((3, 4), (2, 6)), seed=3)
    assert len(t1) == 6 and t1[0] == "{}"
    assert all(t.endswith(". {}") and t.count("{}") == 1 for t in t1[1:])
    assert context_templates(tiny_model, ((3, 4), (2, 6)), seed=3) == t1
    assert context_templates(tiny_model, ((3, 4), (2, 6)), seed=3, use_cache=False) == t1
    assert context_templates(tiny_model, ((3, 4), (2, 6)), seed=4, use_cache=False) != t1
