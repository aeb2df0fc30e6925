"""Every architecture the core issue lists: the recorded output equals model(x), relevance is conserved
(sum input + sum sinks = seed, relative error <= 1e-4), and a batch equals its examples one by one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dl_backtrace.pytorch_backtrace import DLBacktrace

torchvision = pytest.importorskip("torchvision")

TV_MODELS = ["resnet18", "resnet50", "vgg11_bn", "mobilenet_v2", "efficientnet_b0", "densenet121"]


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))


def _cnn1d() -> nn.Module:
    return nn.Sequential(nn.Conv1d(3, 8, 5, padding=2, dilation=1), nn.BatchNorm1d(8), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Conv1d(8, 8, 3, stride=2, groups=4), nn.SiLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                         nn.Linear(8, 4))


def _cnn2d() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
                         nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=6), nn.Sigmoid(), nn.AvgPool2d(2),
                         nn.Conv2d(6, 8, 1), nn.AdaptiveMaxPool2d(2), nn.Flatten(), nn.Linear(32, 5))


SMALL = {"mlp": (_mlp, (2, 10)), "cnn1d": (_cnn1d, (2, 3, 32)), "cnn2d": (_cnn2d, (2, 3, 16, 16))}


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and biases so batch norm and bias sinks are exercised."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            if m.bias is not None:
                with torch.no_grad():
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model.eval()


def _check(model: nn.Module, x: torch.Tensor) -> DLBacktrace:
    dlb = DLBacktrace(model, (x,))
    node_io = dlb.predict(x)
    with torch.no_grad():
        expected = model(x)
    out = node_io[list(node_io.keys())[-1]][1]
    assert torch.allclose(out, expected, atol=1e-6, rtol=0), float((out - expected).abs().max())
    rel = dlb.evaluation(task="multi-class classification")
    assert rel.conservation_error <= 1e-4
    total = float(rel.input_relevance.sum()) + sum(float(s.sum()) for s in rel.bias_sinks.values())
    assert abs(total - 100.0 * x.shape[0]) <= 1e-4 * 100.0 * x.shape[0]
    assert torch.isfinite(rel.input_relevance).all()
    return dlb


@pytest.mark.parametrize("name", list(SMALL))
def test_small_models(name: str) -> None:
    torch.manual_seed(0)
    factory, shape = SMALL[name]
    _check(_randomise_bn(factory()), torch.randn(shape))


@pytest.mark.slow
@pytest.mark.parametrize("name", TV_MODELS)
def test_torchvision_models(name: str) -> None:
    torch.manual_seed(0)
    model = _randomise_bn(getattr(torchvision.models, name)(weights=None))
    dlb = _check(model, torch.randn(1, 3, 64, 64))
    assert not dlb.engine.unsupported


@pytest.mark.parametrize("name", ["cnn2d", "resnet18"])
def test_batch_equals_examples(name: str) -> None:
    torch.manual_seed(1)
    model = _randomise_bn(_cnn2d() if name == "cnn2d" else torchvision.models.resnet18(weights=None))
    x = torch.randn(4, 3, 32, 32) if name == "resnet18" else torch.randn(4, 3, 16, 16)
    dlb = DLBacktrace(model, (x,))
    dlb.predict(x)
    batch = dlb.evaluation(task="classification", target=[0, 1, 2, 3])
    for b in range(4):
        dlb.predict(x[b:b + 1])
        one = dlb.evaluation(task="classification", target=b)
        scale = float(one.input_relevance.abs().max())
        assert torch.allclose(batch.input_relevance[b], one.input_relevance[0], atol=1e-5 * scale, rtol=0)
        for key in (batch.input_names[0], "output"):
            assert torch.allclose(batch[key][b], one[key][0], atol=1e-5 * max(scale, 1.0))
