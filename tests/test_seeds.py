"""Seeding (sections 1 and 4) for every task, by hand."""

from __future__ import annotations

import pytest
import torch

from dl_backtrace.seeds import TASKS, canonical_task, make_seed


def test_classification_argmax_target_and_single_unit() -> None:
    y = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 1.0]])
    assert torch.equal(make_seed(y, "multi-class classification"), torch.tensor([[0, 100.0, 0], [100.0, 0, 0]]))
    assert torch.equal(make_seed(y, "classification", target=2)[:, 2], torch.tensor([100.0, 100.0]))
    assert torch.equal(make_seed(y, "classification", target=[0, 1]), torch.tensor([[100.0, 0, 0], [0, 100.0, 0]]))
    assert torch.equal(make_seed(torch.tensor([[-0.3]]), "binary-classification"), torch.tensor([[100.0]]))
    assert torch.equal(make_seed(y, "regression", multiplier=2.0, scaler=0.5)[0], torch.tensor([0, 1.0, 0]))


def test_contrast_classification_and_single_unit() -> None:
    y = torch.tensor([[1.8, -0.8]])
    s = make_seed(y, "classification", contrast=True)
    assert torch.allclose(s.positive, torch.tensor([[100.0, 0.0]]))
    assert torch.allclose(s.negative, torch.tensor([[0.0, -0.8 * 100 / 1.8]]))
    s1 = make_seed(torch.tensor([[0.25]]), "binary-classification", contrast=True)
    assert torch.allclose(s1.negative, torch.tensor([[100 / 0.25 * 0.75]]))
    s2 = make_seed(torch.tensor([[1.5]]), "binary-classification", contrast=True)
    assert torch.equal(s2.negative, torch.tensor([[0.0]]))


def test_segmentation_threshold_shares_by_score() -> None:
    y = torch.tensor([[[[0.2, 0.9], [0.6, 0.4]]]])  # (1, 1, 2, 2)
    s = make_seed(y, "binary-segmentation", thresholding=0.5)
    assert torch.allclose(s, torch.tensor([[[[0, 0.9], [0.6, 0]]]]) * 100 / 1.5)
    c = make_seed(y, "segmentation", thresholding=0.5, contrast=True)
    k = 100 / 1.5
    assert torch.allclose(c.positive, s)
    assert torch.allclose(c.negative, torch.tensor([[[[0.2 * k, 0.1 * k], [0.4 * k, 0.4 * k]]]]))
    multi = torch.tensor([[[[0.9, 0.1]], [[0.05, 0.8]]]])  # (1, 2, 1, 2): argmax channel per pixel
    m = make_seed(multi, "segmentation", thresholding=0.5)
    assert torch.allclose(m, torch.tensor([[[[0.9, 0]], [[0, 0.8]]]]) * 100 / 1.7)


def test_token_classification_and_generation() -> None:
    y = torch.tensor([[[1.0, 3.0], [2.0, 1.0]]])  # (1, T=2, C=2): chosen 3 and 2
    s = make_seed(y, "token-classification")
    assert torch.allclose(s, torch.tensor([[[0, 60.0], [40.0, 0]]]))
    g = make_seed(torch.randn(2, 4, 7), "generation", target=5)
    assert torch.equal(g[:, 3, 5], torch.tensor([100.0, 100.0])) and float(g.sum()) == 200.0
    one = make_seed(y, "token-classification", target=(1, 1))
    assert float(one[0, 1, 1]) == 100.0 and float(one.sum()) == 100.0


def test_task_spellings_and_errors() -> None:
    for t in ["binary-classification", "multi-class classification", "multiclass-classification",
              "classification", "regression", "binary-segmentation", "segmentation", "token-classification",
              "generation"]:
        assert t in TASKS
    with pytest.raises(ValueError, match="valid tasks"):
        canonical_task("detection")
    with pytest.raises(ValueError, match="per example"):
        make_seed(torch.randn(3, 2), "classification", target=[0, 1])


def test_targets_are_validated_with_the_valid_range() -> None:
    import pytest

    from dl_backtrace.seeds import make_seed

    y = torch.randn(2, 4)
    for bad, msg in ((-1, r"0\.\.3"), (4, r"0\.\.3"), (99, r"0\.\.3"), (3.7, "integer"), (True, "integer"),
                     ("2", "integer"), ([1, -1], r"0\.\.3"), (torch.tensor([0.5, 1.0]), "integer"),
                     ((5,), "outside")):
        with pytest.raises(ValueError, match=msg):
            make_seed(y, "classification", bad)
    assert float(make_seed(y, "classification", 3)[0, 3]) == 100.0  # the last valid class is accepted
    seg = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        make_seed(seg, "segmentation", 3)
    with pytest.raises(ValueError, match="finite"):
        make_seed(y, "classification", 1, multiplier=float("nan"))


def test_contrast_seed_with_a_subnormal_target_value_is_finite() -> None:
    from dl_backtrace.seeds import make_seed

    y = torch.tensor([[6e-39, 3e-39, -1e-39]])
    seed = make_seed(y, "classification", 0, contrast=True)
    assert torch.isfinite(seed.negative).all()
    # R- = value * y_k / |y_t| (RELEVANCE.md section 4), computed as a ratio
    torch.testing.assert_close(seed.negative, torch.tensor([[0.0, 50.0, -100.0 / 6]]), rtol=1e-5, atol=1e-5)
