"""toplens.analyses: COUNTERFACT_RS evaluation and the paper's analyses, built on the plugin.

Subpackages: :mod:`~toplens.analyses.evaluation` (records, datasets, metrics, the runner) and
:mod:`~toplens.analyses.tracing` (causal tracing, RIE, saliency, the independence check); the la
sweep is :mod:`~toplens.analyses.sweep`, the plots :mod:`~toplens.analyses.figures`, and the
command line :mod:`~toplens.analyses.cli` (which nothing here imports).
"""

from toplens.analyses.evaluation import (
    METRICS, BuildOptions, CaseEvaluation, CaseResult, ContentToken, DatasetError, EvalResult, Fact, KnownFact,
    MethodSummary, MetricResult, PromptOutcome, Rates, Record, Relation, Summary, build_records, builtin_records,
    evaluate_case, evaluate_record, load_dataset, load_records, load_stop_words, measure, read_counterfact,
    read_counterfact_rs, read_known_facts, read_requests, records_from_known_facts, run_eval, save_records, summarize,
    top_non_stop_token,
)
from toplens.analyses.sweep import SweepCase, SweepPoint, SweepResult, la_sweep
# ``causal_trace`` (the function) is not re-exported: it would hide the submodule
# toplens.analyses.tracing.causal_trace; use ``from toplens.analyses.tracing.causal_trace import causal_trace``.
from toplens.analyses.tracing import (
    EditTrace, IndependenceResult, LayerPositionMap, RieReport, RieRow, SaliencyResult, TraceResult, causal_traces,
    gradient_saliency, independence_check, relative_indirect_effects, trace_edit,
)

__all__ = [
    "EditTrace", "IndependenceResult", "LayerPositionMap", "RieReport", "RieRow", "SaliencyResult", "SweepCase",
    "SweepPoint", "SweepResult", "TraceResult", "causal_traces", "gradient_saliency", "independence_check",
    "la_sweep", "relative_indirect_effects", "trace_edit",
    "METRICS", "BuildOptions", "CaseEvaluation", "CaseResult", "ContentToken", "DatasetError", "EvalResult", "Fact",
    "KnownFact", "MethodSummary", "MetricResult", "PromptOutcome", "Rates", "Record", "Relation", "Summary",
    "build_records", "builtin_records", "evaluate_case", "evaluate_record", "load_dataset", "load_records",
    "load_stop_words", "measure", "read_counterfact", "read_counterfact_rs", "read_known_facts", "read_requests",
    "records_from_known_facts", "run_eval", "save_records", "summarize", "top_non_stop_token",
]
