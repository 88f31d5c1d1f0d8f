"""toplens.analyses: COUNTERFACT_RS data and metrics, and the analyses built on the plugin."""

from .builder import BuildOptions, Fact, Relation, build_records, builtin_records, records_from_known_facts
from .datasets import KnownFact, load_records, read_counterfact, read_counterfact_rs, read_known_facts, save_records
from .evaluate import CaseEvaluation, evaluate_case, evaluate_record, measure
from .metrics import MetricResult, PromptOutcome, TopToken, load_stop_words, top_non_stop_token
from .records import DatasetError, Record
from .results import CaseResult, Rates, Summary, summarize
from .runner import run_eval

__all__ = [
    "BuildOptions", "CaseEvaluation", "CaseResult", "DatasetError", "Fact", "KnownFact", "MetricResult",
    "PromptOutcome", "Rates", "Record", "Relation", "Summary", "TopToken", "build_records", "builtin_records",
    "evaluate_case", "evaluate_record", "load_records", "load_stop_words", "measure", "read_counterfact",
    "read_counterfact_rs", "read_known_facts", "records_from_known_facts", "run_eval", "save_records",
    "summarize", "top_non_stop_token",
]
