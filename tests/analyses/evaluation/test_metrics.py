import math

import numpy as np
import pytest

from toplens.analyses.evaluation import metrics as m
from toplens.analyses.evaluation.results import CaseResult, summarize


def test_efficacy_compares_new_against_true():
    assert m.efficacy("p", nll_new=0.5, nll_true=2.0).rate == 1.0
    assert m.efficacy("p", nll_new=2.0, nll_true=0.5).rate == 0.0
    assert m.efficacy("p", nll_new=1.0, nll_true=1.0).rate == 0.0  # a tie is not a success


def test_efficacy_at_1_succeeds_exactly_when_o_stars_first_token_is_the_argmax():
    rng = np.random.default_rng(0)
    for trial in range(40):
        lp = np.log(rng.dirichlet(np.ones(12)))
        token = int(np.argmax(lp)) if trial % 2 else int(rng.integers(12))
        result = m.efficacy_at_1("p", lp, token)
        assert result.rate == float(token == int(np.argmax(lp)))
        (o,) = result.outcomes
        assert o.nll_wanted == pytest.approx(-lp[token]) and o.wanted == str(token)
        assert o.nll_rival == pytest.approx(-np.max(np.delete(lp, token)))  # the best other token


def test_a_knock_out_passes_efficacy_but_not_efficacy_at_1():
    """P(o*) 0.02 > P(o) 0.001, but a third token holds most of the mass: o* is not the top token."""
    probs = np.full(10, 0.078 / 7)
    probs[[3, 5, 8]] = 0.02, 0.001, 0.9  # o*'s first token 3, o 5, another word 8
    words = {3: " Rome", 8: " the"}
    assert m.efficacy("p", -math.log(0.02), -math.log(0.001)).rate == 1.0
    at_1 = m.efficacy_at_1("p", np.log(probs), 3, decode=lambda i: words.get(i, "?"))
    assert at_1.rate == 0.0 and at_1.failures[0].wanted == " Rome" and at_1.failures[0].rival == " the"
    assert at_1.magnitude == pytest.approx(0.02 - 0.9)
    probs[[3, 8]] = 0.9, 0.02
    assert m.efficacy_at_1("p", np.log(probs), 3).rate == 1.0


def test_efficacy_at_1_counts_a_tie_at_the_top_as_a_failure():
    lp = np.log([0.4, 0.4, 0.2])
    assert m.efficacy_at_1("p", lp, 0).rate == 0.0 and m.efficacy_at_1("p", lp, 2).rate == 0.0


def test_generalization_keeps_which_prompts_flipped():
    result = m.generalization(["a", "b", "c", "d"], [0.1, 3.0, 0.2, 0.3], [1.0, 1.0, 1.0, 0.1],
                              new=" Rome", true=" Paris")
    assert result.rate == 0.5
    assert [o.prompt for o in result.failures] == ["b", "d"]
    assert result.failures[0].wanted == " Rome" and result.failures[0].rival == " Paris"
    expected = np.mean([math.exp(-w) - math.exp(-r) for w, r in [(0.1, 1), (3, 1), (0.2, 1), (0.3, 0.1)]])
    assert result.magnitude == pytest.approx(expected)


def test_s_specificity_wants_the_true_object():
    result = m.s_specificity(["n1", "n2", "n3"], nll_new=[2.0, 0.5, 3.0], nll_true=[1.0, 1.0, 1.0],
                             true=[" A", " B", " C"])
    assert result.rate == pytest.approx(2 / 3)
    assert [o.wanted for o in result.failures] == [" B"]
    assert result.magnitude == pytest.approx(np.mean([math.exp(-1) - math.exp(-2), math.exp(-1) - math.exp(-0.5),
                                                      math.exp(-1) - math.exp(-3)]))


def test_r_specificity_compares_pre_edit_token_with_new_target():
    result = m.r_specificity(["r1", "r2"], tokens=[" Paris", " French"], nll_token=[0.7, 4.0], nll_new=[2.0, 3.0])
    assert result.rate == 0.5 and result.failures[0].wanted == " French"


def test_max_and_mean_token_nll():
    assert m.max_token_nll([-0.1, -2.5, -0.4]) == pytest.approx(2.5)
    assert m.mean_token_nll([-1.0, -2.0]) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="max_token_nll: a target has at least one token"):
        m.max_token_nll([])


def test_metric_rejects_mismatched_lengths_and_nan():
    with pytest.raises(ValueError, match="2 prompts"):
        m.generalization(["a", "b"], [0.1], [0.2])
    with pytest.raises(ValueError, match="finite"):
        m.generalization(["a"], [float("nan")], [0.2])


def test_empty_metric_is_undefined_not_zero():
    empty = m.generalization([], [], [])
    assert empty.rate is None and empty.magnitude is None


def test_top_non_stop_token_skips_stop_words_and_punctuation():
    vocab = [" the", ",", " Paris", " of", "  ", " London"]
    probs = np.array([0.4, 0.2, 0.1, 0.15, 0.1, 0.05])
    top = m.top_non_stop_token(probs, vocab.__getitem__, {"the", "of"})
    assert (top.token_id, top.text, top.prob) == (2, " Paris", pytest.approx(0.1))
    # with " Paris" as a stop word the next content token wins
    assert m.top_non_stop_token(probs, vocab.__getitem__, frozenset({"the", "of", "paris"})).text == " London"
    with pytest.raises(ValueError, match="content word"):
        m.top_non_stop_token(probs, vocab.__getitem__, {"the", "of", "paris", "london"})


def test_stop_words_from_file_set_or_fallback(tmp_path):
    path = tmp_path / "stop.txt"
    path.write_text("The\n\nof\n  a \n")
    assert m.load_stop_words(path) == {"the", "of", "a"}
    assert m.load_stop_words(str(path)) == {"the", "of", "a"}
    assert m.load_stop_words({"X"}) == {"x"}
    assert {"the", "of", "is"} <= m.load_stop_words(None)


def test_ngram_entropy_on_known_distributions():
    assert m.ngram_entropy("a a a a a", 2) == 0.0  # one distinct bigram
    assert m.ngram_entropy("a b c d e", 2) == pytest.approx(2.0)  # four distinct bigrams, uniform
    assert m.ngram_entropy("a b", 3) == 0.0  # too short for a trigram
    # ROME's weights: mean(2/3 * H2, 4/3 * H3); "a b c d e" has H2 = 2 and H3 = log2(3)
    assert m.text_entropy("a b c d e") == pytest.approx((2 / 3 * 2 + 4 / 3 * math.log2(3)) / 2)
    assert m.fluency(["a a a a", "a b c d e"]) == pytest.approx(m.text_entropy("a b c d e") / 2)
    assert m.fluency([]) is None


def test_repetitive_text_is_less_fluent():
    varied = "The cat sat on the mat while the dog slept near the warm fire in the old house."
    assert m.fluency(["the the the the the the the the the the"]) < m.fluency([varied])


def test_tfidf_matches_hand_computation():
    vec = m.TfIdf.fit(["apple banana", "apple cherry"])
    assert vec.vocabulary == {"apple": 0, "banana": 1, "cherry": 2}
    idf_rare = math.log(3 / 2) + 1
    assert vec.idf == pytest.approx([1.0, idf_rare, idf_rare])
    a = np.array([1.0, idf_rare, 0.0]) / math.hypot(1.0, idf_rare)
    assert vec.transform("Apple banana") == pytest.approx(a)


def test_consistency():
    assert m.consistency(["Paris is in France"], None) is None
    assert m.consistency(["Paris is in France"], []) is None
    assert m.consistency(["paris france"], ["France Paris"]) == pytest.approx(1.0)
    assert m.consistency(["apple banana"], ["cherry grape"]) == 0.0
    partial = m.consistency(["the capital paris"], ["paris is lovely"])
    assert 0.0 < partial < 1.0


def test_score_is_harmonic_mean():
    assert m.score(1.0, 0.5, 1.0, 0.5) == pytest.approx(4 / (1 + 2 + 1 + 2))
    assert m.score(1.0, 0.0, 1.0, 1.0) == 0.0
    assert m.score(1.0, None, 1.0, 1.0) is None


def test_case_results_summarize_to_means():
    def case(i, eff, gen_new):
        return CaseResult(i, m.efficacy("p", eff, 1.0), m.generalization(["q"] * len(gen_new), gen_new, [1.0] * len(gen_new)),
                          m.s_specificity(["n"], [2.0], [1.0]), m.r_specificity(["r"], ["t"], [0.5], [1.0]),
                          fluency=5.0, consistency=None)
    cases = [case(0, 0.5, [0.5, 2.0]), case(1, 2.0, [])]
    assert cases[0].score == pytest.approx(4 / (1 + 2 + 1 + 1))
    assert cases[1].score is None  # no paraphrases: generalization undefined
    s = summarize(cases)
    assert (s.rates.efficacy, s.rates.generalization, s.rates.s_specificity) == (0.5, 0.5, 1.0)
    assert s.score == pytest.approx(4 / (2 + 2 + 1 + 1))
    assert s.fluency == 5.0 and s.consistency is None and s.n_cases == 2


def test_efficacy_at_1_is_averaged_over_the_cases_that_have_it_and_left_out_of_the_score():
    def case(i, at_1):
        return CaseResult(i, m.efficacy("p", 0.5, 1.0), m.generalization(["q"], [0.5], [1.0]),
                          m.s_specificity(["n"], [2.0], [1.0]), m.r_specificity(["r"], ["t"], [0.5], [1.0]),
                          efficacy_at_1=None if at_1 is None else m.efficacy_at_1("p", np.log([0.3, 0.7]), at_1))
    cases = [case(0, 1), case(1, 0), case(2, None), case(3, None)]  # success, failure, two old lines
    assert [c.efficacy_at_1.rate if c.efficacy_at_1 else None for c in cases] == [1.0, 0.0, None, None]
    s = summarize(cases)
    assert s.efficacy_at_1 == 0.5  # (1 + 0) / 2, not (1 + 0) / 4
    assert all(c.score == 1.0 for c in cases) and s.score == 1.0  # a failed Efficacy@1 does not lower the Score
    assert summarize(cases[2:]).efficacy_at_1 is None and summarize([]).efficacy_at_1 is None
