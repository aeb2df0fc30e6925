"""The seed-compatible API as the user guide uses it, and the modern API."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dl_backtrace
from dl_backtrace.pytorch_backtrace import DLBacktrace


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _global_state() -> tuple:
    return (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
            torch.backends.mkldnn.enabled, torch.is_grad_enabled(), torch.get_default_dtype())


def test_user_guide_workflow_runs_verbatim() -> None:
    model = Net().eval()
    dummy_input = torch.randn(1, 3, 8, 8)
    before = _global_state()
    dlb = DLBacktrace(model=model, input_for_graph=(dummy_input,))
    input_tensor = torch.randn(1, 3, 8, 8)
    node_io = dlb.predict(input_tensor)
    relevance = dlb.evaluation(mode="default", multiplier=100.0, task="multi-class classification")
    output = node_io[list(node_io.keys())[-1]][1]
    predicted_class = output.argmax()
    assert int(predicted_class) == int(model(input_tensor).argmax())
    # the guide ranks nodes by their total relevance
    sorted_relevance = sorted(relevance.items(), key=lambda x: float(x[1].abs().sum()), reverse=True)
    assert len(sorted_relevance) == len(relevance) > 3
    # default mode keeps the seed's sign, so no node holds more than the seed (100); the input holds less
    assert float(sorted_relevance[0][1].abs().sum()) == pytest.approx(100.0, rel=1e-5)
    assert 0 < float(relevance["x"].sum()) < 100.0
    for name, (inputs, _out) in node_io.items():
        assert isinstance(name, str) and isinstance(inputs, tuple)
    assert _global_state() == before
    assert relevance["x"].shape == input_tensor.shape
    assert relevance["x"].device.type == "cpu"


def test_evaluation_twice_and_targets() -> None:
    x = torch.randn(2, 3, 8, 8)
    dlb = DLBacktrace(Net().eval(), x)
    dlb.predict(x)
    a = dlb.evaluation(task="classification", target=1)
    b = dlb.evaluation(task="classification", target=[3, 4])
    assert a["output"][0, 1] == 100 and a["output"][1, 1] == 100
    assert b["output"][0, 3] == 100 and b["output"][1, 4] == 100
    assert not torch.allclose(a["x"], b["x"])
    again = dlb.evaluation(task="classification", target=1)
    assert torch.equal(a["x"], again["x"])


def test_multiplier_and_scaler_scale_linearly() -> None:
    x = torch.randn(1, 3, 8, 8)
    dlb = DLBacktrace(Net().eval(), x)
    dlb.predict(x)
    base = dlb.evaluation(task="classification")
    for mult, scaler in [(1.0, None), (250.0, None), (100.0, 3.0)]:
        r = dlb.evaluation(task="classification", multiplier=mult, scaler=scaler)
        k = mult * (scaler or 1.0) / 100.0
        assert torch.allclose(r["x"], base["x"] * k, rtol=1e-5, atol=1e-6)
        assert abs(float(r["output"].sum()) - 100.0 * k) < 1e-3


def test_errors_say_what_to_do() -> None:
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="unknown device"):
        DLBacktrace(Net().eval(), x, device="tpu9")
    dlb = DLBacktrace(Net().eval(), x)
    with pytest.raises(dl_backtrace.errors.DLBacktraceError, match="predict"):
        dlb.evaluation()
    dlb.predict(x)
    with pytest.raises(ValueError, match="valid tasks"):
        dlb.evaluation(task="clasification")
    with pytest.raises(ValueError, match="mode"):
        dlb.evaluation(mode="fancy")
    with pytest.raises(ValueError, match="temperature"):
        dlb.predict(x, temperature=0)


def test_cuda_request_without_cuda_falls_back_loudly() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    x = torch.randn(1, 3, 8, 8)
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        dlb = DLBacktrace(Net().eval(), x, device="cuda")
    dlb.predict(x)
    assert dlb.evaluation(task="classification").conservation_error < 1e-5


def test_new_input_shape_retraces_and_dynamic_shapes_trace_once() -> None:
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2)).eval()
    dlb = DLBacktrace(model, torch.randn(1, 6))
    out = dlb.predict(torch.randn(5, 6))["output"][1]
    assert out.shape == (5, 2)
    batch = torch.export.Dim("batch")
    dyn = DLBacktrace(model, torch.randn(2, 6), dynamic_shapes=({0: batch},))
    for n in (3, 7):
        x = torch.randn(n, 6)
        assert torch.allclose(dyn.predict(x)["output"][1], model(x))
    assert len(dyn.engine._programs) == 1


def test_temperature_divides_logits_and_seeds_from_them() -> None:
    x = torch.randn(1, 3, 8, 8)
    model = Net().eval()
    dlb = DLBacktrace(model, x)
    out = dlb.predict(x, temperature=2.0)["output"][1]
    assert torch.allclose(out, model(x) / 2.0)
    rel = dlb.evaluation(mode="contrast", task="classification")
    y = model(x)[0] / 2.0
    t = int(y.argmax())
    assert torch.allclose(rel["output"].negative[0, (t + 1) % 5], 100.0 / y[t].abs() * y[(t + 1) % 5])


def test_modern_api() -> None:
    model = Net().eval()
    x = torch.randn(2, 3, 8, 8)
    explainer = dl_backtrace.Explainer(model, x)
    res = explainer.attribute(x, target=3)
    assert res.input_relevance.shape == x.shape
    assert res.conservation_error < 1e-5
    one = dl_backtrace.explain(model, x, target=3)
    assert torch.allclose(one.input_relevance, res.input_relevance)


@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_lean_explanation_equals_full(name: str) -> None:
    """nodes=False records only what the rules read and frees activations as it goes: same input relevance."""
    if name == "cnn":
        torchvision = pytest.importorskip("torchvision")
        model, inputs, task = torchvision.models.resnet18(weights=None).eval(), (torch.randn(2, 3, 32, 32),), None
        kw = {}
    else:
        from tests.models.zoo import build

        model, inputs, task = build("llama"), (), "generation"
        ids = torch.randint(3, 99, (2, 7))
        kw = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    explainer = dl_backtrace.Explainer(model, inputs if inputs else kw)
    for mode in ("default", "contrast"):
        full = explainer.attribute(*inputs, task=task, mode=mode, **kw)
        lean = explainer.attribute(*inputs, task=task, mode=mode, nodes=False, **kw)
        assert len(lean) < len(full)
        a, b = full.input_relevance, lean.input_relevance
        a = a["input_ids"] if isinstance(a, dict) else a
        b = b["input_ids"] if isinstance(b, dict) else b
        for s in ((0, 1) if mode == "contrast" else (None,)):
            x, y = (a[s], b[s]) if s is not None else (a, b)
            assert torch.equal(x, y)
    run = explainer.engine.run(inputs, kw, lean=True)
    assert run.execution.lean and len(run.execution.values) < len(explainer.engine.program.analysis.order)


def test_one_shot_explain_routes_engine_keywords() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4)).eval()
    x = torch.randn(2, 5)
    res = dl_backtrace.explain(model, x, device="cpu", max_programs=2, target=1, mode="contrast")
    ref = dl_backtrace.Explainer(model, x).attribute(x, target=1, mode="contrast")
    torch.testing.assert_close(res.input_relevance.positive, ref.input_relevance.positive, rtol=0, atol=0)
