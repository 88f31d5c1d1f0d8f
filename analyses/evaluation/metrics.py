"""COUNTERFACT_RS metrics on numbers: no model here, only NLLs, probabilities and texts.

NLLs are the mean negative log-probability per target token (teacher forced), except where a
docstring says otherwise. A prompt's outcome compares a *wanted* continuation with a *rival*:
- Efficacy / Generalization: wanted o* (target_new), rival o (target_true);
- Efficacy@1: wanted o*'s first token, rival the most likely other next token;
- S-Specificity: wanted o, rival o*;
- R-Specificity: wanted the model's top non-stop-word token before the edit, rival o*.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

# A short stop-word list of our own, used only when no list is given (the evaluation passes
# ../shared/data/stopwords.txt).
FALLBACK_STOP_WORDS = frozenset("""
a an the and or but nor so yet of in on at to for from by with without about as into onto over under
than then that this these those there here it its is are was were be been being am do does did done
has have had not no yes he she they we you i me him her them us my his their our your who whom whose
which what when where why how all any some each every both either neither one also just only very
too more most much many such same other another own can could will would shall should may might must
""".split())


@dataclass(frozen=True)
class PromptOutcome:
    """One prompt: success when ``wanted`` is more likely than ``rival`` (lower NLL)."""

    prompt: str
    nll_wanted: float
    nll_rival: float
    wanted: str = ""
    rival: str = ""

    @property
    def success(self) -> bool:
        return self.nll_wanted < self.nll_rival

    @property
    def margin(self) -> float:
        """P(wanted) − P(rival), with P = exp(−NLL)."""
        return math.exp(-self.nll_wanted) - math.exp(-self.nll_rival)


@dataclass(frozen=True)
class MetricResult:
    """A metric over a record's prompts; ``failures`` shows which prompts went the wrong way."""

    name: str
    outcomes: tuple[PromptOutcome, ...]

    @property
    def rate(self) -> float | None:
        """Fraction of prompts that succeed; None when there are no prompts."""
        return None if not self.outcomes else sum(o.success for o in self.outcomes) / len(self.outcomes)

    @property
    def magnitude(self) -> float | None:
        """Mean probability difference P(wanted) − P(rival); None when there are no prompts."""
        return None if not self.outcomes else float(np.mean([o.margin for o in self.outcomes]))

    @property
    def failures(self) -> tuple[PromptOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.success)


def _finite(name: str, values: Sequence[float]) -> list[float]:
    out = [float(v) for v in values]
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name}: NLLs must be finite; got {out}")
    return out


def compare(name: str, prompts: Sequence[str], nll_wanted: Sequence[float], nll_rival: Sequence[float],
            *, wanted: Sequence[str] | str = "", rival: Sequence[str] | str = "") -> MetricResult:
    """Per-prompt outcomes of ``wanted`` against ``rival`` (labels: one string or one per prompt)."""
    n = len(prompts)
    if not len(nll_wanted) == len(nll_rival) == n:
        raise ValueError(f"{name}: {n} prompts but {len(nll_wanted)} wanted and {len(nll_rival)} rival NLLs")
    labels_w = [wanted] * n if isinstance(wanted, str) else list(wanted)
    labels_r = [rival] * n if isinstance(rival, str) else list(rival)
    rows = zip(prompts, _finite(name, nll_wanted), _finite(name, nll_rival), labels_w, labels_r, strict=True)
    return MetricResult(name, tuple(PromptOutcome(*row) for row in rows))


def efficacy(prompt: str, nll_new: float, nll_true: float, *, new: str = "", true: str = "") -> MetricResult:
    """P(o*) > P(o) on the rewrite prompt after the edit."""
    return compare("efficacy", [prompt], [nll_new], [nll_true], wanted=new, rival=true)


def efficacy_at_1(prompt: str, next_logprobs: Sequence[float] | np.ndarray, token_id: int,
                  decode: Callable[[int], str] = str) -> MetricResult:
    """Efficacy@1: o*'s first token (``token_id``) is the top next token at the rewrite prompt.

    A knock-out of both P(o*) and P(o) passes Efficacy but not this; it looks at o*'s first token
    only (for a multi-token o* it does not imply Efficacy). The outcome
    compares that token's NLL with the best other token's (a tie is not a success).
    """
    lp = np.asarray(next_logprobs, dtype=np.float64).reshape(-1)
    others = lp.copy()
    others[token_id] = -np.inf
    rival = int(np.argmax(others))
    return compare("efficacy_at_1", [prompt], [-lp[token_id]], [-lp[rival]], wanted=decode(token_id),
                   rival=decode(rival))


def generalization(prompts: Sequence[str], nll_new: Sequence[float], nll_true: Sequence[float],
                   *, new: str = "", true: str = "") -> MetricResult:
    """P(o*) > P(o) on the paraphrases after the edit."""
    return compare("generalization", prompts, nll_new, nll_true, wanted=new, rival=true)


def s_specificity(prompts: Sequence[str], nll_new: Sequence[float], nll_true: Sequence[float],
                  *, new: str = "", true: Sequence[str] | str = "") -> MetricResult:
    """P(o) > P(o*) on the neighborhood prompts after the edit (``nll_true`` of each prompt's own
    true object, see Record.neighborhood_true)."""
    return compare("s_specificity", prompts, nll_true, nll_new, wanted=true, rival=new)


def r_specificity(prompts: Sequence[str], tokens: Sequence[str], nll_token: Sequence[float],
                  nll_new: Sequence[float], *, new: str = "") -> MetricResult:
    """Relation-specific prompts: success when the token the model predicted before the edit
    (``tokens``, from top_non_stop_token) keeps a lower NLL after the edit than o*, whose NLL is
    the max over its tokens (max_token_nll)."""
    return compare("r_specificity", prompts, nll_token, nll_new, wanted=tokens, rival=new)


def mean_token_nll(token_logprobs: Iterable[float]) -> float:
    """Mean NLL per target token from per-token log-probabilities."""
    values = [-float(v) for v in token_logprobs]
    if not values:
        raise ValueError("mean_token_nll: a target has at least one token")
    return sum(values) / len(values)


def max_token_nll(token_logprobs: Iterable[float]) -> float:
    """The largest per-token NLL of a target (o*'s NLL for R-Specificity)."""
    values = [-float(v) for v in token_logprobs]
    if not values:
        raise ValueError("max_token_nll: a target has at least one token")
    return max(values)


# --- stop words and the top token ---------------------------------------------------------------

def load_stop_words(source: str | Path | Iterable[str] | None = None) -> frozenset[str]:
    """Stop words, lower-cased: from a file (one per line), from given words, or the fallback list."""
    if source is None:
        return FALLBACK_STOP_WORDS
    if isinstance(source, (str, Path)):
        words: Iterable[str] = Path(source).read_text(encoding="utf-8").splitlines()
    else:
        words = source
    return frozenset(w.strip().lower() for w in words if w.strip())


@dataclass(frozen=True)
class ContentToken:
    """The most likely next token that is not a stop word."""

    token_id: int
    text: str
    prob: float


def is_content_token(text: str, stop_words: frozenset[str]) -> bool:
    """False for stop words and for tokens with no letter or digit (spaces, punctuation)."""
    word = text.strip().lower()
    return bool(re.search(r"\w", word)) and word not in stop_words


def top_non_stop_token(probs: Sequence[float] | np.ndarray, decode: Callable[[int], str],
                       stop_words: frozenset[str] | str | Path | Iterable[str] | None = None,
                       *, max_candidates: int = 1000) -> ContentToken:
    """The most probable token whose decoded text is a content word (see is_content_token).

    Args:
        probs: next-token probabilities (or logits: only their order matters), shape [vocab].
        decode: token id -> text, e.g. ``tokenizer.decode`` or ``lambda i: tok.decode([i])``.
        stop_words: a set, a path to a one-per-line file, or None for FALLBACK_STOP_WORDS.
        max_candidates: how many of the most probable tokens to try before giving up.
    """
    words = stop_words if isinstance(stop_words, frozenset) else load_stop_words(stop_words)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    k = min(max_candidates, p.size)
    top = np.argpartition(-p, k - 1)[:k]
    for token_id in top[np.argsort(-p[top], kind="stable")]:
        text = decode(int(token_id))
        if is_content_token(text, words):
            return ContentToken(int(token_id), text, float(p[token_id]))
    raise ValueError(f"top_non_stop_token: none of the {k} most probable tokens is a content word")


# --- fluency and consistency -----------------------------------------------------------------

def _words(text: str) -> list[str]:
    """Words and single punctuation marks (stands in for nltk.word_tokenize)."""
    return re.findall(r"\w+(?:'\w+)?|[^\w\s]", text)


def ngram_entropy(text: str, n: int) -> float:
    """Entropy in bits of the n-gram frequency distribution of ``text`` (0 when it has none)."""
    words = _words(text)
    counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    if not counts:
        return 0.0
    freqs = np.array(list(counts.values()), dtype=np.float64)
    freqs /= freqs.sum()
    return float(-(freqs * np.log2(freqs)).sum())


def text_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """ROME's compute_n_gram_entropy: the mean of weighted 2- and 3-gram entropies."""
    return float(np.mean([w * ngram_entropy(text, n) for n, w in zip(ns, weights, strict=True)]))


def fluency(generations: Sequence[str]) -> float | None:
    """ROME's n_gram_entropy: mean text_entropy over generations (bits; papers report ×100)."""
    return float(np.mean([text_entropy(g) for g in generations])) if generations else None


def tfidf_tokens(text: str) -> list[str]:
    """Lower-cased words of two or more characters (scikit-learn's default token pattern)."""
    return re.findall(r"(?u)\b\w\w+\b", text.lower())


@dataclass(frozen=True)
class TfIdf:
    """A tf-idf vectorizer: smoothed idf ln((1+n)/(1+df)) + 1 and l2-normalized rows, as in
    scikit-learn's TfidfVectorizer defaults."""

    vocabulary: dict[str, int]
    idf: np.ndarray

    @classmethod
    def fit(cls, corpus: Iterable[str]) -> "TfIdf":
        docs = [set(tfidf_tokens(t)) for t in corpus]
        vocabulary = {w: i for i, w in enumerate(sorted(set().union(*docs)))}
        df = np.zeros(len(vocabulary))
        for doc in docs:
            df[[vocabulary[w] for w in doc]] += 1
        return cls(vocabulary, np.log((1 + len(docs)) / (1 + df)) + 1)

    def transform(self, text: str) -> np.ndarray:
        vec = np.zeros(len(self.vocabulary))
        for word, count in Counter(tfidf_tokens(text)).items():
            if word in self.vocabulary:
                vec[self.vocabulary[word]] = count
        vec *= self.idf
        norm = np.linalg.norm(vec)
        return vec / norm if norm > 0 else vec


def consistency(generations: Sequence[str], reference_texts: Sequence[str] | None,
                vectorizer: TfIdf | None = None) -> float | None:
    """Tf-idf cosine between the joined generations and the joined reference texts (ROME's
    reference score); None when there are no reference texts. ``vectorizer`` defaults to one
    fitted on these texts; fit one on the whole dataset's references to compare across records."""
    if not reference_texts or not generations:
        return None
    vec = vectorizer or TfIdf.fit([*generations, *reference_texts])
    return float(vec.transform(" ".join(generations)) @ vec.transform(" ".join(reference_texts)))


# --- score --------------------------------------------------------------------------------------

def harmonic_mean(values: Sequence[float | None]) -> float | None:
    """Harmonic mean; None if any value is None; 0 if any is 0."""
    if not values or any(v is None for v in values):
        return None
    if any(v <= 0 for v in values):  # type: ignore[operator]
        return 0.0
    return len(values) / sum(1 / v for v in values)  # type: ignore[operator]


def score(efficacy: float | None, generalization: float | None, s_specificity: float | None,
          r_specificity: float | None) -> float | None:
    """Harmonic mean of the four rates (None when any is undefined)."""
    return harmonic_mean([efficacy, generalization, s_specificity, r_specificity])
