"""COUNTERFACT_RS evaluation: records and their readers, the builder, the metrics and the runner."""

from toplens.analyses.evaluation.builder import BuildOptions, Fact, Relation, build_records, builtin_records
from toplens.analyses.evaluation.cases import MethodSummary, read_cases, summaries_from_cases
from toplens.analyses.evaluation.datasets import (load_dataset, load_records, read_counterfact, read_counterfact_rs,
                                                  read_requests, save_records)
from toplens.analyses.evaluation.evaluate import CaseEvaluation, Measurement, evaluate_case, evaluate_record, measure
from toplens.analyses.evaluation.known_facts import KnownFact, read_known_facts, records_from_known_facts
from toplens.analyses.evaluation.metrics import (ContentToken, MetricResult, PromptOutcome, load_stop_words,
                                                 top_non_stop_token)
from toplens.analyses.evaluation.records import DatasetError, Record
from toplens.analyses.evaluation.results import METRICS, CaseResult, Rates, Summary, summarize
from toplens.analyses.evaluation.runner import EvalResult, run_eval

__all__ = [
    "METRICS", "BuildOptions", "CaseEvaluation", "CaseResult", "ContentToken", "DatasetError", "EvalResult", "Fact",
    "KnownFact", "Measurement", "MethodSummary", "MetricResult", "PromptOutcome", "Rates", "Record", "Relation",
    "Summary", "build_records", "builtin_records", "evaluate_case", "evaluate_record", "load_dataset",
    "load_records", "load_stop_words", "measure", "read_cases", "read_counterfact", "read_counterfact_rs",
    "read_known_facts", "read_requests", "records_from_known_facts", "run_eval", "save_records",
    "summaries_from_cases", "summarize", "top_non_stop_token",
]
