"""Loading models and inputs named on the command line (and by the server)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pickle
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .demo_model import load_demo

__all__ = ["Loaded", "load_model", "load_input", "IMAGE_SUFFIXES", "UsageError"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class UsageError(ValueError):
    """A bad argument: reported in one line, exit code 2."""


@dataclass
class Loaded:
    model: torch.nn.Module
    name: str
    example: Any  # example input(s) for tracing
    tokenizer: Any = None
    image_shape: tuple[int, int, int] | None = None  # (C, H, W) expected by an image model
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    task: str | None = None
    labels: list[str] | None = None

    @property
    def public_name(self) -> str:
        """The name without filesystem paths (what a server may show)."""
        return re.sub(r"(/[^\s,()]+)+", lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], self.name)


def _demo() -> Loaded:
    model, images, _ = load_demo()
    return Loaded(model, "digits-cnn (bundled demo, trained on scikit-learn digits)", (images[:1],),
                  image_shape=(1, 8, 8), task="image-classification", labels=[str(d) for d in range(10)])


def _torchvision(name: str, size: int, weights: str | None) -> Loaded:
    try:
        import torchvision
    except ImportError as e:
        raise UsageError("torchvision models need torchvision: pip install 'dl_backtrace[vision]'") from e
    try:
        model = torchvision.models.get_model(name, weights=None)
    except ValueError as e:
        raise UsageError(f"unknown torchvision model {name!r}") from e
    if weights:
        try:
            model.load_state_dict(_state_dict(weights))
        except RuntimeError as e:  # wrong keys or shapes
            raise UsageError(f"{weights} does not fit torchvision {name}: {str(e).splitlines()[0][:200]}") from e
    return Loaded(model.eval(), f"torchvision {name}", (torch.zeros(1, 3, size, size),), image_shape=(3, size, size),
                  normalize=_IMAGENET, task="image-classification")


def _state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or .pt (``weights_only``: a pickle payload is refused, never run)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"no such weights file: {path}")
    from safetensors import SafetensorError

    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        return torch.load(p, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, SafetensorError, RuntimeError, ValueError, OSError, EOFError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise UsageError(f"cannot read weights {path} ({type(e).__name__}): {first}") from e


def _hf(path: str, head: str | None = None) -> Loaded:
    try:
        import transformers
    except ImportError as e:
        raise UsageError("hf-config models need transformers: pip install 'dl_backtrace[hf]'") from e
    p = Path(path)
    folder = p.parent if p.is_file() else p
    if not (folder / "config.json").exists():
        raise UsageError(f"no config.json in {folder}")
    config = transformers.AutoConfig.from_pretrained(str(folder))
    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    if cls is None:  # no (or an unknown) architecture: the Auto class for the head the command needs
        cls = transformers.AutoModelForCausalLM if head == "causal-lm" else transformers.AutoModel
        if head is None:
            warnings.warn(f"{folder / 'config.json'} names no known architectures: loading the base model "
                          "(no task head); add e.g. \"architectures\": [\"BertForSequenceClassification\"]",
                          UserWarning, stacklevel=3)
    arch = archs[0] if archs and getattr(transformers, archs[0], None) is not None else cls.__name__
    weighted = any((folder / f).exists() for f in ("model.safetensors", "pytorch_model.bin"))
    if weighted:
        model = cls.from_pretrained(str(folder))
    elif hasattr(cls, "from_config"):  # the Auto classes
        model = cls.from_config(config)
    else:  # a concrete class (transformers 5.x has only the private constructor from a config)
        model = cls._from_config(config)
    tokenizer = None
    if any((folder / f).exists() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    ids = torch.tensor([[1, 2, 3, 4]])
    return Loaded(model.eval(), f"{arch} ({'weights' if weighted else 'random weights'}, {folder})",
                  {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, tokenizer)


def _factory(spec: str) -> Loaded:
    module_name, _, attr = spec.rpartition(":")
    if module_name.endswith(".py"):
        if not Path(module_name).is_file():
            raise UsageError(f"no such file: {module_name}")
        loader = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
        if loader is None or loader.loader is None:
            raise UsageError(f"cannot import {module_name}")
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:  # like `python -m`: the current directory first
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(module_name)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"{module_name} has no callable {attr!r}")
    made = factory()
    model, example = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module (or (module, example))")
    return Loaded(model.eval(), spec, example)


def load_model(spec: str, size: int = 224, weights: str | None = None, head: str | None = None) -> Loaded:
    """``demo``, ``torchvision:NAME``, ``hf-config:PATH`` or ``MODULE:FACTORY`` / ``file.py:FACTORY`` (a factory
    returning the model, or (model, example_input)). ``head="causal-lm"`` loads an hf-config folder without
    ``architectures`` as a causal LM."""
    if size < 1:
        raise UsageError(f"--size must be a positive number of pixels, got {size}")
    if spec == "demo":
        return _demo()
    kind, _, rest = spec.partition(":")
    if not rest:
        raise UsageError(f"--model must be demo, torchvision:NAME, hf-config:PATH or MODULE:FACTORY, got {spec!r}")
    if kind == "torchvision":
        return _torchvision(rest, size, weights)
    if kind == "hf-config":
        return _hf(rest, head)
    try:
        return _factory(spec)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"cannot load {spec!r}: {e}") from e


def image_tensor(img: Any, loaded: Loaded) -> torch.Tensor:
    """A PIL image as the model's input batch (1, C, H, W): resized, converted, normalised."""
    c, h, w = loaded.image_shape or (3, 224, 224)
    img = img.convert("L" if c == 1 else "RGB").resize((w, h))
    from .viz.heatmap import tensor_image

    x = tensor_image(img)
    if loaded.normalize:
        mean, std = (torch.tensor(v).reshape(-1, 1, 1) for v in loaded.normalize)
        x = (x - mean) / std
    return x[None]


def load_input(path: str | None, loaded: Loaded, text: str | None = None) -> Any:
    """An image, a .pt tensor (or dict of tensors), a .npy array or text (with the model's tokenizer)."""
    if text is None and path is not None and Path(path).suffix == ".txt":
        text = Path(path).read_text().strip()
    if text is not None:
        if loaded.tokenizer is None:
            raise UsageError("text input needs a model with a tokenizer (hf-config:PATH with tokenizer files)")
        return dict(loaded.tokenizer([text], return_tensors="pt"))
    if path is None:
        raise UsageError("give --input FILE (image, .pt, .npy, .txt) or --text")
    p = Path(path)
    if not p.exists():
        raise UsageError(f"no such input file: {path}")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(p) as img:
                return image_tensor(img, loaded)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise UsageError(f"{path} is too large an image to decode ({e}); resize it first") from e
        except (UnidentifiedImageError, OSError) as e:
            raise UsageError(f"cannot read image {path}: {e}") from e
    if p.suffix == ".pt":
        return torch.load(p, weights_only=True, map_location="cpu")
    if p.suffix == ".npy":
        import numpy as np

        return torch.from_numpy(np.load(p, allow_pickle=False))
    if p.suffix == ".json":
        try:
            return torch.tensor(json.loads(p.read_text()))
        except RecursionError as e:
            raise UsageError(f"{path} is nested too deeply to be a tensor") from e
        except (ValueError, TypeError) as e:
            raise UsageError(f"{path} does not hold a (nested) list of numbers: {e}") from e
    raise UsageError(f"unsupported input type {p.suffix!r}: use an image, .pt, .npy, .json or .txt")
