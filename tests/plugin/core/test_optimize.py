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
