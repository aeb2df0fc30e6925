"""Image heatmaps: relevance summed over channels, drawn next to the input and as an overlay.

Default-mode relevance is non-negative for a positive seed and gets a sequential colour map; signed relevance
(contrast ``net``, or anything with negative values) gets a diverging map centred at 0.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..rules.registry import Pair

__all__ = ["relevance_map", "image_figure", "save_image_heatmap", "heatmap_png", "heatmap_png_fast"]

# colour-map anchors (0..1 -> RGB): a sequential one like inferno, a diverging blue-white-red one
_SEQUENTIAL = torch.tensor([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]]) / 255.0
_DIVERGING = torch.tensor([[5, 48, 97], [146, 197, 222], [247, 247, 247], [244, 165, 130], [103, 0, 31]]) / 255.0


def relevance_map(rel: Tensor | Pair) -> Tensor:
    """(H, W) map from one example's relevance (C, H, W) or (H, W); contrast pairs use ``net``."""
    t = rel.net if isinstance(rel, Pair) else rel
    t = t.detach().float().cpu()
    if t.dim() == 4:
        t = t[0]
    return t.sum(0) if t.dim() == 3 else t


def _image(x: Tensor) -> Tensor:
    img = x.detach().float().cpu()
    img = img[0] if img.dim() == 4 else img
    img = img.permute(1, 2, 0) if img.dim() == 3 else img
    img = img - img.min()
    return img / img.max().clamp(min=1e-12)


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("image heatmaps need matplotlib: pip install 'dl_backtrace[viz]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_figure(x: Tensor, rel: Tensor | Pair, title: str = "") -> Any:
    """A matplotlib figure: input, relevance heatmap, overlay."""
    plt = _plt()
    r = relevance_map(rel)
    signed = isinstance(rel, Pair) or float(r.min()) < 0
    lim = float(r.abs().max()) or 1.0
    cmap, vmin = ("RdBu_r", -lim) if signed else ("inferno", 0.0)
    img = _image(x)
    fig, axes = plt.subplots(1, 3, figsize=(6.6, 2.4))
    axes[0].imshow(img.squeeze(-1) if img.dim() == 3 and img.shape[-1] == 1 else img,
                   cmap="gray" if img.dim() == 2 or img.shape[-1] == 1 else None)
    axes[0].set_title("input")
    shown = axes[1].imshow(r, cmap=cmap, vmin=vmin, vmax=lim)
    axes[1].set_title("relevance" + (" (net)" if isinstance(rel, Pair) else ""))
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    gray = img.mean(-1) if img.dim() == 3 else img
    axes[2].imshow(gray, cmap="gray")
    axes[2].imshow(r, cmap=cmap, vmin=vmin, vmax=lim, alpha=0.55)
    axes[2].set_title("overlay")
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_image_heatmap(x: Tensor, rel: Tensor | Pair, path: str | Path, title: str = "") -> Path:
    """Write input / heatmap / overlay as a PNG."""
    plt = _plt()
    fig = image_figure(x, rel, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def heatmap_png(x: Tensor, rel: Tensor | Pair, title: str = "") -> bytes:
    """The same picture as PNG bytes (for HTML reports and the server)."""
    plt = _plt()
    fig = image_figure(x, rel, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _colour(values: Tensor, anchors: Tensor) -> Tensor:
    """(H, W) values in [0, 1] -> (H, W, 3) colours, linear between the anchors."""
    pos = values.clamp(0, 1) * (len(anchors) - 1)
    low = pos.floor().long().clamp(max=len(anchors) - 2)
    frac = (pos - low)[..., None]
    return anchors[low] * (1 - frac) + anchors[low + 1] * frac


def heatmap_png_fast(x: Tensor, rel: Tensor | Pair, min_size: int = 160) -> bytes:
    """Input, heatmap and overlay side by side as PNG bytes, drawn with PIL alone: no pyplot (not thread-safe),
    a few milliseconds instead of matplotlib's hundreds. Used by the server."""
    from PIL import Image

    r = relevance_map(rel)
    signed = isinstance(rel, Pair) or float(r.min()) < 0
    lim = float(r.abs().max()) or 1.0
    heat = _colour(r / (2 * lim) + 0.5, _DIVERGING) if signed else _colour(r / lim, _SEQUENTIAL)
    img = _image(x)
    rgb = img[..., None].expand(*img.shape, 3) if img.dim() == 2 else (
        img.expand(*img.shape[:2], 3) if img.shape[-1] == 1 else img[..., :3])
    if heat.shape[:2] != rgb.shape[:2]:  # relevance of another resolution than the input: resample it
        heat = torch.nn.functional.interpolate(heat.permute(2, 0, 1)[None], size=rgb.shape[:2])[0].permute(1, 2, 0)
    overlay = 0.45 * rgb.mean(-1, keepdim=True).expand_as(rgb) + 0.55 * heat
    gap = torch.ones(rgb.shape[0], max(1, rgb.shape[1] // 16), 3)
    strip = torch.cat([rgb, gap, heat, gap, overlay], dim=1)
    pixels = (strip * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    picture = Image.fromarray(pixels, mode="RGB")
    factor = max(1, -(-min_size // rgb.shape[0]))
    picture = picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


def tensor_image(x: Any) -> Tensor:
    """A float (C, H, W) tensor in [0, 1] from a PIL image."""
    import numpy as np

    arr = torch.from_numpy(np.asarray(x, dtype=np.float32) / 255.0)
    return arr[None] if arr.dim() == 2 else arr.permute(2, 0, 1)
