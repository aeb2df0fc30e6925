"""ViTs: HuggingFace ViTForImageClassification (sdpa and eager), torchvision vit and swin (small configs)."""

from __future__ import annotations

import pytest
import torch

from dl_backtrace.pytorch_backtrace import DLBacktrace

transformers = pytest.importorskip("transformers")
torchvision = pytest.importorskip("torchvision")


def _hf_vit(attn: str) -> torch.nn.Module:
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                 image_size=32, patch_size=8, num_labels=5)
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    return transformers.ViTForImageClassification(cfg).eval()


def _check(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    dlb = DLBacktrace(model, (x,))
    out = dlb.predict(x)["output"][1]
    with torch.no_grad():
        ref = model(x)
    ref = ref.logits if hasattr(ref, "logits") else ref
    assert torch.allclose(out, ref, atol=1e-6, rtol=0)
    rel = None
    for mode in ("default", "contrast"):
        rel = dlb.evaluation(mode=mode, task="classification")
        assert rel.conservation_error <= 1e-4
    rel = dlb.evaluation(task="classification")
    x_rel = rel.input_relevance
    assert x_rel.shape == x.shape and float(x_rel.abs().sum()) > 1.0  # the image gets relevance, not 0
    return x_rel


def test_hf_vit_sdpa_equals_eager() -> None:
    x = torch.randn(2, 3, 32, 32)
    sdpa, eager = _hf_vit("sdpa"), _hf_vit("eager")
    eager.load_state_dict(sdpa.state_dict())
    a, b = _check(sdpa, x), _check(eager, x)
    assert torch.allclose(a, b, atol=1e-4 * float(b.abs().max()))


def test_torchvision_vit() -> None:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                 hidden_dim=32, mlp_dim=64, num_classes=5).eval()
    torch.nn.init.normal_(model.heads.head.weight, std=0.2)  # torchvision initialises the head to zero
    _check(model, torch.randn(2, 3, 32, 32))


def test_torchvision_swin() -> None:
    torch.manual_seed(0)
    model = torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                               window_size=[4, 4], num_classes=5).eval()
    _check(model, torch.randn(1, 3, 32, 32))


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("vit_b_16", 224), ("swin_t", 64)])
def test_torchvision_constructors_are_fully_covered(name: str, size: int) -> None:
    """The stock constructors (not only the small configs above) trace with a rule for every op."""
    import dl_backtrace

    model = getattr(torchvision.models, name)(weights=None).eval()
    assert dl_backtrace.coverage(model, (torch.randn(1, 3, size, size),)) == []
