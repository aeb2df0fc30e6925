"""HTTP server (extra ``server``: FastAPI + uvicorn). ``create_app(model=None)`` serves the bundled demo model by
default; ``dlbacktrace serve`` runs it on loopback. Every input is validated; pickles are never loaded."""

from __future__ import annotations

import base64
import math
import threading
from collections.abc import Sequence
from importlib import resources
from typing import Any

import torch

from ..loading import Loaded, load_model
from ..pytorch_backtrace import DLBacktrace
from ..viz.heatmap import heatmap_png_fast
from ..viz.summary import top_nodes
from .limits import Limits

__all__ = ["create_app", "Limits", "LOOPBACK_HOSTS"]


def _fastapi() -> Any:
    try:
        import fastapi
    except ImportError as e:
        raise ImportError("the server needs: pip install 'dl_backtrace[server]'") from e
    return fastapi


class _Service:
    """The model, its explainer and a lock (one explanation at a time)."""

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        example = loaded.example if isinstance(loaded.example, (tuple, dict)) else (loaded.example,)
        self.dlb = DLBacktrace(loaded.model, example)
        self.lock = threading.Lock()
        self.causal = "CausalLM" in type(loaded.model).__name__ or "LMHead" in type(loaded.model).__name__

    def describe(self) -> dict[str, Any]:
        traced = self.dlb.traced
        inputs = [{"name": n, "shape": list(s), "dtype": str(d)} for n, s, d in traced.example_shapes]
        accepts = (["image"] if self.loaded.image_shape else []) + (["text"] if self.loaded.tokenizer else [])
        task = self.loaded.task or ("generation" if self.causal else "inferred from the output (see /explain)")
        return {"name": self.loaded.public_name, "inputs": inputs, "task": task, "accepts": accepts + ["tensor"]}

    def generate(self, inputs: dict[str, torch.Tensor], max_new_tokens: int) -> dict[str, Any]:
        with self.lock:  # one decoding at a time: the token explainer is built once and shared
            res = self.dlb.run_task(task="generation", inputs=inputs, tokenizer=self.loaded.tokenizer,
                                    max_new_tokens=max_new_tokens)
        steps = [{"step": e["step"], "token": e["token"][0], "tokens": e["tokens"][0],
                  "relevance": [float(v) for v in e["relevance"][0]]} for e in res["relevance_trace"]]
        return {"text": res["generated_text"][0], "generated_tokens": res["generated_tokens"][0], "steps": steps}

    def explain(self, inputs: dict[str, torch.Tensor], mode: str, target: int | None) -> dict[str, Any]:
        """One explanation (called from the worker pool: DLBacktrace keeps predict/evaluation state per thread)."""
        node_io = self.dlb.predict(**inputs)
        task = "generation" if self.causal else self.loaded.task
        rel = self.dlb.evaluation(mode=mode, task=task, target=target)
        y = node_io["output"][1][0]
        y = y[-1] if y.dim() == 2 else y
        k = int(y.argmax())
        streams = [{k2: _json_number(v) for k2, v in t.items()} for t in rel.stream_totals()]
        out: dict[str, Any] = {"prediction": k, "conservation_error": _json_number(rel.conservation_error),
                               "mode": rel.mode, "streams": streams,
                               "top_nodes": [[n, s] for n, s in top_nodes(rel, 10)]}
        if y.dim() == 1 and y.numel() > 1 and not self.causal:
            out["probability"] = float(y.float().softmax(-1)[k])
        if self.loaded.labels:
            out["label"] = self.loaded.labels[k]
        return out | self._relevance_view(inputs, rel)

    def _relevance_view(self, inputs: dict[str, torch.Tensor], rel: Any) -> dict[str, Any]:
        name = rel.input_names[0]
        x, r = inputs[name], rel[name]
        if "input_ids" in inputs and self.loaded.tokenizer is not None:
            t = r.net if isinstance(r, tuple) else r
            return {"tokens": self.loaded.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist()),
                    "relevance": [float(v) for v in t[0]]}
        if x.is_floating_point() and x.dim() == 4:
            rb = type(r)(r[0][0], r[1][0]) if isinstance(r, tuple) else r[0]
            png = heatmap_png_fast(x[0], rb)
            return {"heatmap_png": "data:image/png;base64," + base64.b64encode(png).decode()}
        t = r.net if isinstance(r, tuple) else r
        return {"relevance": t[0].tolist()}


def _viewer() -> str:
    return (resources.files("dl_backtrace") / "server" / "viewer.html").read_text()


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def create_app(model: Loaded | torch.nn.Module | str | None = None, example: Any = None,
               limits: Limits | None = None, allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS) -> Any:
    """A FastAPI app explaining ``model`` (a ``Loaded`` from :func:`dl_backtrace.loading.load_model`, a module
    with ``example`` inputs, a model spec string, or None for the bundled digits demo).

    ``limits`` bounds every request (:class:`~dl_backtrace.server.limits.Limits`: body size, image pixels, text
    length, concurrent and queued explanations). ``allowed_hosts`` are the Host headers served (default: the
    loopback names, which stops DNS rebinding against a server bound to loopback; None serves any). There are
    no /docs, /redoc or /openapi.json pages."""
    fastapi = _fastapi()
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    if model is None or isinstance(model, str):
        loaded = load_model(model or "demo")
    elif isinstance(model, Loaded):
        loaded = model
    else:
        loaded = Loaded(model.eval(), type(model).__name__, example)
    service = _Service(loaded)
    app = fastapi.FastAPI(title="dl_backtrace", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    from .routes import add_routes

    add_routes(app, service, _viewer(), limits or Limits())
    return app


def _json_number(v: Any) -> Any:
    """JSON has no NaN/inf: a non-finite number is sent as null (the response's conservation error says why)."""
    return None if isinstance(v, float) and not math.isfinite(v) else v
