"""The saliency probe: one full forward and backward of the rewriting prompts per optimization
step, with backward hooks on every layer's residual, and the alignment of every rewriting prompt
onto the bare prompt's positions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from toplens.core.interventions import Hook, add_vector, capture, capture_grad
from toplens.core.objective import RewriteBatch
from toplens.core.positions import PromptPositions, locate
from toplens.core.requests import EditRequest
from toplens.core.stages import Stage
from toplens.core.templates import SUBJECT_SLOT, fill
from toplens.model import ModelAdapter, hook_name


# ------------------------------------------------------------------------ alignment
def _prompt_start(adapter: ModelAdapter, template: str) -> int:
    """Index of the prompt's first own token in ``template`` filled with it (after the prefix); a row
    in another word order (:data:`SUBJECT_SLOT`) is aligned by its subject and last token alone."""
    if SUBJECT_SLOT in template:
        return len(adapter.tokenize(""))
    prefix = template[: template.index("{}")]
    return len(adapter.tokenize(prefix.rstrip())) if prefix.strip() else len(adapter.tokenize(""))


def _align_row(bare: PromptPositions, bare_start: int, row: PromptPositions, row_start: int) -> list[int]:
    """For each bare-prompt position, the matching position in one rewriting prompt (−1: none).

    Tokens before the prompt (BOS) map to themselves; the words before the subject are anchored
    at the subject's first token, the subject at its last token, the relation at the last token.
    """
    out = []
    for i in range(len(bare.tokens)):
        if i < bare_start:
            j, low = i, 0
        elif i < bare.subject_start:
            j, low = row.subject_start - (bare.subject_start - i), row_start
        elif i <= bare.last_subject:
            j, low = row.last_subject - (bare.last_subject - i), row.subject_start
        else:
            j, low = row.last_relation - (bare.last_relation - i), row.last_subject + 1
        out.append(j if j >= low else -1)
    return out


def prompt_alignment(
    adapter: ModelAdapter, request: EditRequest, templates: Sequence[str]
) -> Int[Tensor, "row pos"]:
    """Row r, column i: the position in rewriting prompt r (``templates[r]``) that plays the role
    of the bare prompt's position i, or −1 where that prompt has no such token."""
    bare = locate(adapter, request.prompt, request.subject)
    bare_start = _prompt_start(adapter, "{}")
    rows = []
    for template in templates:
        row = locate(adapter, fill(template, request.prompt), request.subject)
        rows.append(_align_row(bare, bare_start, row, _prompt_start(adapter, template)))
    return torch.tensor(rows, dtype=torch.long)


# --------------------------------------------------------------------- one step
@dataclass
class SaliencyProbe:
    """The rewriting prompts and the running sums of both saliencies, aligned to the bare prompt.

    Attributes:
        adapter: the model; batch: the rewriting batch (its KL rows are not used).
        alignment: see :func:`prompt_alignment`.
        grad_sum, gxa_sum: sums over recorded (step, prompt) pairs per [layer, position].
        counts: how many (step, prompt) pairs each position received; steps: recorded steps.
    """

    adapter: ModelAdapter
    batch: RewriteBatch
    alignment: Int[Tensor, "row pos"]
    grad_sum: Float[Tensor, "layer pos"] = field(init=False)
    gxa_sum: Float[Tensor, "layer pos"] = field(init=False)
    counts: Float[Tensor, " pos"] = field(init=False)
    steps: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        shape = (self.adapter.n_layers, self.alignment.shape[1])
        self.grad_sum, self.gxa_sum = torch.zeros(shape), torch.zeros(shape)
        self.counts = torch.zeros(shape[1])

    @property
    def names(self) -> list[str]:
        return [hook_name("resid_post", layer) for layer in range(self.adapter.n_layers)]

    def record(self, site_hooks: Sequence[Hook]) -> None:
        """One full forward + backward with ``site_hooks`` (the current δ); add both saliencies."""
        grads, acts = self.gradients(site_hooks)
        valid = self.alignment >= 0
        index = self.alignment.clamp_min(0)
        for layer, name in enumerate(self.names):
            grad, act = grads[name][0][: len(index)], acts[name][: len(index)]
            norm = grad.norm(dim=-1).float().cpu().gather(1, index)
            gxa = (grad * act).sum(-1).abs().float().cpu().gather(1, index)
            self.grad_sum[layer] += (norm * valid).sum(0)
            self.gxa_sum[layer] += (gxa * valid).sum(0)
        self.counts += valid.sum(0)
        self.steps += 1

    def gradients(self, site_hooks: Sequence[Hook]) -> tuple[dict[str, list[Tensor]], dict[str, Tensor]]:
        """∂L/∂h and h at every layer's ``hook_resid_post`` for the rewriting prompts."""
        grads: dict[str, list[Tensor]] = {}
        acts: dict[str, Tensor] = {}
        fwd = [(hook_name("embed"), _grad_leaf), *site_hooks, *(capture(n, acts) for n in self.names)]
        bwd = [capture_grad(n, grads) for n in self.names]
        with torch.enable_grad(), self.adapter.frozen(), self.adapter.hooks(fwd, bwd):
            rewriting_nll(self.adapter, self.batch).backward()
        return grads, acts

    def maps(self) -> tuple[Float[Tensor, "layer pos"], Float[Tensor, "layer pos"]]:
        """The averages: grad norm and grad × activation per [layer, position]."""
        if self.steps == 0:
            raise RuntimeError("no saliency step was recorded")
        denominator = self.counts.clamp_min(1)
        return self.grad_sum / denominator, self.gxa_sum / denominator


def _grad_leaf(act: Tensor, hook) -> Tensor:
    """Make the token embeddings a leaf that needs a gradient, so that the backward pass reaches
    every block even while the weights are frozen."""
    return act.detach().requires_grad_(True)


def rewriting_nll(adapter: ModelAdapter, batch: RewriteBatch) -> Float[Tensor, ""]:
    """The rewriting loss: mean NLL of the target tokens over the rewriting prompts.

    A plain full forward to the logits: the loss must flow through every hook point's output
    (where backward hooks sit), which a residual captured inside a hook would bypass.
    """
    tokens = batch.tokens[: batch.n_rewrite]
    logits = adapter.logits(tokens)[batch.target_rows, batch.target_cols]
    logp = logits.float().log_softmax(-1).gather(1, batch.target_ids[:, None]).squeeze(1)
    return -(logp * batch.target_weight).sum()


def delta_hook(stage: Stage, batch: RewriteBatch, delta: Float[Tensor, " d"]) -> Hook:
    """The current δ of ``stage`` (a detached copy) added at its site and token role in every
    rewriting prompt of ``batch``."""
    return add_vector(stage.hook, delta.detach().clone(), *batch.sites(stage.role, batch.n_rewrite))
