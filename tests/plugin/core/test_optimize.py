import pytest
import torch

from toplens.core.optimize import LossTerms, LoopSettings, NonFiniteLossError, optimize


def _quadratic(target):
    return lambda d: LossTerms(((d - target) ** 2).sum(), distance=float(((d - target) ** 2).sum().detach()))


def test_converges_and_stops_early():
    target = torch.tensor([1.0, -2.0, 0.5])
    delta = torch.zeros(3)
    trace = optimize(_quadratic(target), delta, LoopSettings(steps=500, lr=0.1, max_norm=None, stop_below=1e-4))
    assert trace.converged and trace.steps < 499 and trace.losses[-1] < 1e-4
    assert torch.allclose(delta, target, atol=2e-2)
    assert trace.losses[0] > trace.losses[-1] and trace.parts[0]["distance"] == pytest.approx(trace.losses[0])


def test_clamp_binds_and_last_step_has_no_update():
    target = torch.tensor([10.0, 0.0])
    delta = torch.zeros(2)
    trace = optimize(_quadratic(target), delta, LoopSettings(steps=50, lr=1.0, max_norm=2.0, stop_below=1e-6))
    assert not trace.converged and trace.steps == 49 and len(trace.losses) == 50
    assert delta.norm() <= 2.0 + 1e-5


def test_nan_guard_and_callback():
    seen = []
    delta = torch.zeros(2)

    def objective(d):
        bad = torch.tensor(float("nan")) if len(seen) >= 2 else torch.tensor(0.0)
        return LossTerms((d - 1).pow(2).sum() + bad)

    with pytest.raises(NonFiniteLossError, match="NaN or inf at step 2"):
        optimize(objective, delta, LoopSettings(10, 0.1, None, 0.0), callback=lambda e: seen.append(e.step))
    assert seen == [0, 1]


@pytest.mark.parametrize("steps, start, converged", [(5, 0.0, True), (5, 5.0, False)])
def test_the_callback_sees_each_step_then_one_final_event(steps, start, converged):
    """Every update is seen with its gradient; the stage's last evaluation comes once, marked
    final (no update follows it), also for a loop that converges before any step."""
    events = []
    delta = torch.full((2,), start)
    stop = 1.0 if converged else 0.0
    optimize(_quadratic(torch.zeros(2)), delta, LoopSettings(steps, 0.1, None, stop),
             callback=lambda e: events.append((e.step, e.final, e.delta.grad is not None)))
    finals = [e for e in events if e[1]]
    assert len(finals) == 1 and events[-1] == finals[0]
    if converged:  # the loss at δ = 0 is already below the stop: no update, one final event
        assert events == [(0, True, False)]
    else:
        assert [s for s, final, _ in events if not final] == list(range(steps - 1))
        assert all(has_grad for _, final, has_grad in events if not final)
