"""Every visualisation writes a non-empty file of the right type; HTML escapes what it shows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dl_backtrace.pytorch_backtrace import DLBacktrace
from dl_backtrace.viz import generation_html, save_image_heatmap, tokens_ansi, tokens_html

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def explained():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3),
                          nn.Tanh(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    dlb = DLBacktrace(model, (x,))
    dlb.predict(x)
    return dlb, dlb.evaluation(task="classification"), x


@pytest.mark.parametrize("suffix,magic", [(".png", PNG), (".svg", b"<svg"), (".dot", b"digraph")])
def test_whole_graph(explained, tmp_path: Path, suffix: str, magic: bytes) -> None:
    dlb, _, _ = explained
    out = Path(dlb.visualize(str(tmp_path / f"graph{suffix}")))
    data = out.read_bytes()
    assert data.startswith(magic) and len(data) > 200


def test_top_k_graph_honours_k_and_threshold(explained, tmp_path: Path) -> None:
    dlb, rel, _ = explained
    out = Path(dlb.visualize_dlbacktrace(str(tmp_path / "top"), top_k=3))
    assert out.suffix == ".png" and out.read_bytes().startswith(PNG)
    svg = Path(dlb.visualize_dlbacktrace(str(tmp_path / "top.svg"), top_k=3)).read_text()
    assert svg.count("<rect") == 3
    only_big = Path(dlb.visualize_dlbacktrace(str(tmp_path / "big.svg"), top_k=None, relevance_threshold=0.99))
    assert 1 <= only_big.read_text().count("<rect") < svg.count("<rect") + 10
    assert "linear" in only_big.read_text()


def test_image_heatmap_and_contrast_overlay(explained, tmp_path: Path) -> None:
    dlb, rel, x = explained
    p = save_image_heatmap(x[0], rel["input"][0], tmp_path / "h.png")
    assert p.read_bytes().startswith(PNG)
    contrast = dlb.evaluation(mode="contrast", task="classification")
    c = contrast["input"]
    p2 = save_image_heatmap(x[0], type(c)(c.positive[0], c.negative[0]), tmp_path / "c.png")
    assert p2.read_bytes().startswith(PNG) and p2.stat().st_size > 1000


def test_token_html_escapes_and_ansi() -> None:
    html = tokens_html(["<script>alert(1)</script>", "ok"], torch.tensor([1.0, -0.5]), title="<b>t</b>")
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;" in html
    ansi = tokens_ansi(["a", "b"], torch.tensor([1.0, -1.0]))
    assert "\x1b[48;2;" in ansi and "a" in ansi


def test_generation_map_and_notebook_rendering(explained, tmp_path: Path) -> None:
    trace = [{"step": i, "token_id": [7], "token": ["<tok>"], "tokens": [["a", "<b>", "c"][: 2 + i]],
              "relevance": torch.rand(1, 2 + i)} for i in range(2)]
    html = generation_html(trace)
    assert html.count("<tr>") == 3 and "&lt;tok&gt;" in html and "<b>" not in html.replace("<b>&lt;", "")
    out = DLBacktrace.visualize_tokenwise_relevance_map(trace, str(tmp_path / "map.html"))
    assert Path(out).read_text().startswith("<!doctype html>")
    png = DLBacktrace.visualize_tokenwise_relevance_map(trace, str(tmp_path / "map.png"))
    assert Path(png).read_bytes().startswith(PNG)
    _, rel, _ = explained
    assert "conservation error" in rel._repr_html_()


def test_fast_heatmap_png_colours_follow_the_relevance() -> None:
    """The server's PIL renderer: input | heatmap | overlay; the heatmap's colours are the map's end points where
    relevance is 0 and where it is largest (sequential), and white at 0 for signed relevance (diverging)."""
    import io

    from PIL import Image

    from dl_backtrace.rules.registry import Pair
    from dl_backtrace.viz.heatmap import heatmap_png_fast

    x = torch.rand(1, 8, 8)
    rel = torch.zeros(1, 8, 8)
    rel[0, 2, 5] = 3.0
    img = Image.open(io.BytesIO(heatmap_png_fast(x, rel, min_size=8))).convert("RGB")
    assert img.size == (8 * 3 + 2, 8)  # three 8-pixel panels, two 1-pixel gaps
    heat = 8 + 1  # where the heatmap panel starts
    assert img.getpixel((heat + 5, 2)) == (252, 255, 164) and img.getpixel((heat, 0)) == (0, 0, 4)
    signed = Pair(rel, torch.zeros_like(rel).index_put_((torch.tensor([0]), torch.tensor([7]), torch.tensor([7])),
                                                        torch.tensor([3.0])))
    img = Image.open(io.BytesIO(heatmap_png_fast(x, signed, min_size=8))).convert("RGB")
    assert img.getpixel((heat, 0)) == (247, 247, 247)  # net 0: the diverging map's centre
    assert img.getpixel((heat + 5, 2)) == (103, 0, 31) and img.getpixel((heat + 7, 7)) == (5, 48, 97)
