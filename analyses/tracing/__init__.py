"""Where a fact is recalled: causal tracing, RIE, gradient saliency and the independence check.

``causal_trace`` (the function) is not re-exported: it would hide the submodule of the same name;
use ``from toplens.analyses.tracing.causal_trace import causal_trace``.
"""

from toplens.analyses.tracing.causal_trace import EditTrace, TraceResult, causal_traces, indirect_effects, trace_edit
from toplens.core.corruption import KINDS, Corruption, make_corruption
from toplens.analyses.tracing.independence import IndependenceResult, SubjectFeatureRow, independence_check
from toplens.analyses.tracing.maps import ROLES, LayerPositionMap, position_roles
from toplens.analyses.tracing.rie import RieReport, RieRow, relative_indirect_effects
from toplens.analyses.tracing.saliency import SaliencyResult, gradient_saliency

__all__ = [
    "KINDS", "ROLES", "Corruption", "EditTrace", "IndependenceResult", "LayerPositionMap", "RieReport", "RieRow",
    "SaliencyResult", "SubjectFeatureRow", "TraceResult", "causal_traces", "gradient_saliency", "independence_check",
    "indirect_effects", "make_corruption", "position_roles", "relative_indirect_effects", "trace_edit",
]
