"""toplens.analyses: COUNTERFACT_RS data and metrics, and the analyses built on the plugin."""

from toplens.analyses.builder import BuildOptions, Fact, Relation, build_records, builtin_records, records_from_known_facts
from toplens.analyses.datasets import KnownFact, load_records, read_counterfact, read_counterfact_rs, read_known_facts, save_records
from toplens.analyses.evaluate import CaseEvaluation, evaluate_case, evaluate_record, measure
from toplens.analyses.metrics import MetricResult, PromptOutcome, TopToken, load_stop_words, top_non_stop_token
from toplens.analyses.records import DatasetError, Record
from toplens.analyses.results import CaseResult, Rates, Summary, summarize
from toplens.analyses.runner import run_eval
# The analyses. ``causal_trace`` (the function) is not re-exported: it would hide the submodule of
# the same name; use ``from analyses.causal_trace import causal_trace``.
from toplens.analyses.causal_trace import TraceResult, causal_traces
from toplens.analyses.independence import IndependenceResult, independence_check
from toplens.analyses.rie import RieReport, relative_indirect_effects
from toplens.analyses.saliency import SaliencyResult, gradient_saliency

__all__ = [
    "IndependenceResult", "RieReport", "SaliencyResult", "TraceResult", "causal_traces", "gradient_saliency",
    "independence_check", "relative_indirect_effects",
    "BuildOptions", "CaseEvaluation", "CaseResult", "DatasetError", "Fact", "KnownFact", "MetricResult",
    "PromptOutcome", "Rates", "Record", "Relation", "Summary", "TopToken", "build_records", "builtin_records",
    "evaluate_case", "evaluate_record", "load_records", "load_stop_words", "measure", "read_counterfact",
    "read_counterfact_rs", "read_known_facts", "records_from_known_facts", "run_eval", "save_records",
    "summarize", "top_non_stop_token",
]
