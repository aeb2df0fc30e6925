"""Every task (RELEVANCE.md section 1 and 4) on small models: segmentation on a U-Net-like model, token
classification and generation on transformer-free sequence models; both modes, batch == examples."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dl_backtrace.pytorch_backtrace import DLBacktrace
from tests import reference as ref
from tests.helpers import assert_close, random_seed, run_seed


class UNet(nn.Module):
    def __init__(self, up: str = "bilinear") -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
        self.mid = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.Tanh())
        self.up2 = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.up1 = nn.Upsample(scale_factor=2, mode=up, **({"align_corners": False} if up == "bilinear" else {}))
        self.dec2 = nn.Sequential(nn.Conv2d(16, 4, 3, padding=1), nn.ReLU())
        self.dec1 = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        m = self.mid(e2)
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        return torch.sigmoid(self.dec1(torch.cat([self.up1(d2), e1], dim=1)))


@pytest.mark.parametrize("mode", ["default", "contrast"])
@pytest.mark.parametrize("up", ["bilinear", "nearest"])
def test_unet_segmentation(mode: str, up: str) -> None:
    model = UNet(up).eval()
    x = torch.randn(3, 2, 16, 16)
    dlb = DLBacktrace(model, (x,))
    y = dlb.predict(x)["output"][1]
    rel = dlb.evaluation(mode=mode, task="binary-segmentation", thresholding=0.5)
    seed = rel["output"]
    pos = seed.positive if mode == "contrast" else seed
    selected = y > 0.5
    assert torch.equal(pos != 0, selected)
    assert torch.allclose(pos.flatten(1).sum(1), torch.full((3,), 100.0))
    assert rel.conservation_error <= 1e-4
    for b in range(3):  # batch == examples
        dlb.predict(x[b:b + 1])
        one = dlb.evaluation(mode=mode, task="binary-segmentation")
        a, c = rel["x"], one["x"]
        for k in ((0, 1) if mode == "contrast" else (None,)):
            ak, ck = (a[k], c[k]) if k is not None else (a, c)
            assert torch.allclose(ak[b], ck[0], atol=1e-5 * float(ck.abs().max()))


def test_segmentation_threshold_changes_selection() -> None:
    model = UNet().eval()
    x = torch.randn(1, 2, 16, 16)
    dlb = DLBacktrace(model, (x,))
    y = dlb.predict(x)["output"][1]
    thr = float(y.median())
    rel = dlb.evaluation(task="segmentation", thresholding=thr)
    assert torch.equal(rel["output"] != 0, y > thr)


def _interp_c(x: torch.Tensor, fn) -> torch.Tensor:
    """Contribution matrix of a linear map by probing unit vectors (loops): c[j, i] = L[j, i] x_i."""
    cols = []
    for i in range(x.numel()):
        e = torch.zeros(x.numel(), dtype=torch.float64)
        e[i] = 1.0
        cols.append(fn(e.reshape(x.shape)).reshape(-1))
    jac = torch.stack(cols, dim=1)
    return jac * x.reshape(-1).double()[None, :]


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_interpolation_is_contribution_rule(mode: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 3, 3, generator=gen)
    up = nn.Upsample(scale_factor=2, mode=mode, **({"align_corners": True} if mode == "bilinear" else {}))
    res = run_seed(up, (x,), random_seed(gen))
    c = _interp_c(x[0], lambda t: up(t[None])[0])
    want, _ = ref.default_ref(c, torch.zeros(c.shape[0]), res.seed[0].reshape(-1))
    assert_close(res.input()[0].reshape(-1), want, what=f"{mode} upsample")


class TokenTagger(nn.Module):
    """embedding + conv1d + linear -> per-token classes [B, T, C]."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(self.emb(input_ids).transpose(1, 2))).transpose(1, 2)
        return torch.softmax(self.head(h), dim=-1)


class TinyLM(nn.Module):
    """embedding + causal conv + tied head -> next-token logits [B, T, V]."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.conv = nn.Conv1d(6, 6, 2)
        self.norm = nn.LayerNorm(6)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(input_ids).transpose(1, 2)
        h = torch.nn.functional.pad(h, (1, 0))
        h = self.norm(torch.nn.functional.gelu(self.conv(h)).transpose(1, 2))
        return h @ self.emb.weight.T


@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_token_classification(mode: str) -> None:
    ids = torch.randint(0, 30, (2, 7))
    dlb = DLBacktrace(TokenTagger().eval(), (ids,))
    y = dlb.predict(ids)["output"][1]
    rel = dlb.evaluation(mode=mode, task="token-classification")
    pos = rel["output"].positive if mode == "contrast" else rel["output"]
    chosen = y.gather(-1, y.argmax(-1, keepdim=True))[..., 0]
    assert torch.allclose(pos.sum(-1), 100.0 * chosen / chosen.sum(-1, keepdim=True))
    assert rel["input_ids"].positive.shape == ids.shape if mode == "contrast" else rel["input_ids"].shape == ids.shape
    assert rel.conservation_error <= 1e-4
    tgt = dlb.evaluation(mode=mode, task="token-classification", target=[1, 2])
    pos = tgt["output"].positive if mode == "contrast" else tgt["output"]
    assert torch.all(pos[0, :, [0, 2, 3]] == 0) and torch.all(pos[1, :, [0, 1, 3]] == 0)


@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_generation_seed_and_per_token_relevance(mode: str) -> None:
    model = TinyLM().eval()
    ids = torch.randint(0, 20, (2, 5))
    dlb = DLBacktrace(model, (ids,))
    logits = dlb.predict(ids)["output"][1]
    rel = dlb.evaluation(mode=mode, task="generation")
    pos = rel["output"].positive if mode == "contrast" else rel["output"]
    nxt = logits[:, -1].argmax(-1)
    assert torch.equal(pos[:, -1].argmax(-1), nxt) and float(pos[:, :-1].abs().sum()) == 0.0
    tok = rel["input_ids"].positive if mode == "contrast" else rel["input_ids"]
    assert tok.shape == ids.shape
    assert rel.conservation_error <= 1e-4
    other = dlb.evaluation(mode=mode, task="generation", target=[3, 4])
    pos = other["output"].positive if mode == "contrast" else other["output"]
    assert float(pos[0, -1, 3]) == 100.0 and float(pos[1, -1, 4]) == 100.0
    for b in range(2):
        dlb.predict(ids[b:b + 1])
        one = dlb.evaluation(mode=mode, task="generation", target=[3, 4][b])
        a = other["input_ids"].positive if mode == "contrast" else other["input_ids"]
        c = one["input_ids"].positive if mode == "contrast" else one["input_ids"]
        assert torch.allclose(a[b], c[0], atol=1e-5 * float(c.abs().max()))


@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_relevance_scales_linearly_with_multiplier_and_scaler(mode: str) -> None:
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).eval()
    x = torch.randn(2, 5)
    dlb = DLBacktrace(model, (x,))
    dlb.predict(x)
    base = dlb.evaluation(mode=mode, task="classification")
    for mult, scaler in [(7.0, None), (100.0, 0.25)]:
        r = dlb.evaluation(mode=mode, task="classification", multiplier=mult, scaler=scaler)
        k = mult * (scaler or 1.0) / 100.0
        for key in ("input", "output"):
            a, b = r[key], base[key]
            for s in ((0, 1) if mode == "contrast" else (None,)):
                av, bv = (a[s], b[s]) if s is not None else (a, b)
                assert torch.allclose(av, bv * k, rtol=1e-5, atol=1e-6)


def test_regression_targets_largest_output() -> None:
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    x = torch.randn(2, 4)
    dlb = DLBacktrace(model, (x,))
    y = dlb.predict(x)["output"][1]
    rel = dlb.evaluation(task="regression", multiplier=1.0)
    assert torch.equal(rel["output"].argmax(1), y.argmax(1))
