"""The seed-compatible API (``from dl_backtrace.pytorch_backtrace import DLBacktrace``), on the one engine."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

import torch

from .engine import Engine, Run
from .errors import DLBacktraceError
from .execute import NodeRecord
from .results import Relevance

__all__ = ["DLBacktrace", "MoEBacktrace"]

log = logging.getLogger(__name__)


def _as_args(inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(inputs, dict):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


class _CallState:
    """What predict() leaves for evaluation(): per thread, falling back to the latest of any thread."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._latest: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        mine = getattr(self._local, "values", None)
        return mine.get(key) if mine is not None else self._latest.get(key)

    def set(self, **values: Any) -> None:
        mine = getattr(self._local, "values", None)
        if mine is None:
            mine = self._local.values = {}
        mine.update(values)
        self._latest = dict(mine)


class DLBacktrace:
    """Trace ``model`` once on ``input_for_graph`` and explain its predictions by relevance propagation.

    Args:
        model: any ``torch.nn.Module`` (torchvision, HuggingFace, your own); put it in ``eval()`` mode.
        input_for_graph: example input(s): a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        dynamic_shapes: passed to ``torch.export`` to trace once for varying shapes; without it a new input
            shape is traced again automatically (once per shape).
        device: where the explanation runs ("cpu", "cuda", "cuda:1"). The model object itself is never moved:
            the traced program's own copy of the parameters goes to ``device``, and ``predict`` copies its
            inputs there. "cuda" on a machine without CUDA logs a warning and uses the CPU.
        verbose: log progress at INFO level.
        passthrough_unsupported: pass relevance through ops without a rule instead of raising
            :class:`~dl_backtrace.errors.UnsupportedOpError` (logged per op; results are then approximate).
        output: which output to explain when the model returns several tensors (a name such as
            ``"sentence_embedding"``, or an index); default ``logits``, or the only tensor. Anything else
            (several tensors, an integer tensor, an input passed through) is refused with the outputs found.
        max_programs: how many traced input signatures to keep (least recently used dropped).

    Nothing here changes global torch settings (threads, determinism, backends).
    """

    def __init__(self, model: torch.nn.Module, input_for_graph: Any, dynamic_shapes: Any = None,
                 device: str | torch.device | None = "cpu", verbose: bool = False,
                 passthrough_unsupported: bool = False, output: str | int | None = None,
                 max_programs: int = 8) -> None:
        if verbose:
            root = logging.getLogger("dl_backtrace")
            root.setLevel(logging.INFO)
            if not any(isinstance(h, logging.StreamHandler) for h in root.handlers):
                root.addHandler(logging.StreamHandler())
        args, kwargs = _as_args(input_for_graph)
        self.model = model
        self.engine = Engine(model, args, kwargs, dynamic_shapes, device, passthrough_unsupported, max_programs,
                             output)
        self.engine.check()
        self.device = self.engine.device
        self._state = _CallState()

    # predict() and evaluation() are one call split in two: what predict leaves for evaluation is kept per
    # thread, so threads sharing one DLBacktrace never read each other's run (a thread that has not predicted
    # yet sees the most recent run of any thread).
    @property
    def _run(self) -> Run | None:
        return self._state.get("run")

    @property
    def node_io(self) -> OrderedDict[str, NodeRecord]:
        """node name -> ``(inputs, output)`` of this thread's last :meth:`predict`."""
        return self._state.get("node_io") or OrderedDict()

    @property
    def _last(self) -> Relevance | None:
        return self._state.get("last")

    def predict(self, *inputs: Any, temperature: float = 1.0, **kw_inputs: Any) -> OrderedDict[str, NodeRecord]:
        """Run the traced graph on ``inputs`` and return ``node_io``: node name -> ``(inputs, output)``.

        The last entry (``"output"``) is the model output; with ``temperature`` T it is the logits divided by
        T, and :meth:`evaluation` seeds from that scaled output."""
        if len(inputs) == 1 and isinstance(inputs[0], dict) and not kw_inputs:
            args, kwargs = (), dict(inputs[0])
        else:
            args, kwargs = inputs, kw_inputs
        run = self.engine.run(args, kwargs, temperature)
        node_io = self._node_io(run)
        self._state.set(run=run, node_io=node_io, last=None)
        return node_io

    @staticmethod
    def _node_io(run: Run) -> OrderedDict[str, NodeRecord]:
        io: OrderedDict[str, NodeRecord] = OrderedDict()
        for name, value in run.inputs.items():
            io[name] = NodeRecord((), value)
        ex = run.execution
        for node, value in ex.values.items():
            if node.op == "call_function":
                io[node.name] = NodeRecord(tuple(ex.args_of(node)[0]), value)
        y = run.execution.values[run.program.analysis.output]
        io["output"] = NodeRecord((y,), run.output)
        return io

    def evaluation(self, mode: str = "default", multiplier: float = 100.0, scaler: float | None = None,
                   thresholding: float = 0.5, task: str | None = None, target: Any = None,
                   device: str | torch.device | None = "cpu", precision: str = "fp32") -> Relevance:
        """Relevance of every node for the last :meth:`predict`, seeded per ``task`` (see RELEVANCE.md).

        Returns a :class:`~dl_backtrace.results.Relevance`: node name -> tensor (contrast mode: a
        ``Pair(positive, negative)`` with ``.net``), inputs under their argument names, ``"output"`` the seed;
        ``.bias_sinks`` and ``.conservation_error`` as attributes. Tensors are on ``device`` (CPU by default;
        None keeps them where they were computed). ``precision="fp32"`` (default) computes the relevance
        products in strict IEEE fp32 on every device; ``"fast"`` lets a GPU use TF32."""
        run = self._run
        if run is None:
            raise DLBacktraceError("call predict(inputs) before evaluation()")
        res = self.engine.explain(run, task, target, mode, multiplier, scaler, thresholding, precision=precision)
        res = res.to(device) if device is not None else res
        self._state.set(last=res)
        return res

    def visualize(self, save_path: str = "graph.png") -> str:
        """Draw the traced graph (data movement folded; shares of relevance after an evaluation) to
        ``save_path`` (.png, .svg or .dot). Returns the path written."""
        from .viz.graph import graph_view, write_graph

        prog = self.engine.program
        return str(write_graph(graph_view(prog.traced.graph, prog.analysis, self._last), save_path))

    def visualize_dlbacktrace(self, output_path: str = "backtrace_graph", top_k: int | None = 15,
                              relevance_threshold: float | None = None) -> str:
        """Draw only the ``top_k`` most relevant nodes of the last evaluation (share of the output's relevance
        at least ``relevance_threshold``), with the paths between them. Returns the path written."""
        from .viz.graph import top_k_view, write_graph

        last = self._last
        if last is None:
            raise DLBacktraceError("call predict() and evaluation() before visualize_dlbacktrace()")
        prog = self.engine.program
        view = top_k_view(prog.traced.graph, prog.analysis, last, top_k, relevance_threshold)
        return str(write_graph(view, output_path))

    @staticmethod
    def visualize_tokenwise_relevance_map(relevance_trace: list, output_path: str = "token_map.html",
                                          example: int = 0) -> str:
        """Tokens x steps map of a generation's ``relevance_trace`` (HTML; PNG by suffix)."""
        from .viz.tokens import visualize_tokenwise_relevance_map

        return str(visualize_tokenwise_relevance_map(relevance_trace, output_path, example))

    def run_task(self, task: str = "auto", inputs: Any = None, tokenizer: Any = None, mode: str = "default",
                 multiplier: float = 100.0, scaler: float | None = None, thresholding: float = 0.5,
                 temperature: float = 1.0, return_scores: bool = False, return_relevance: bool = False,
                 return_layerwise_output: bool = False, debug: bool = False, **generation_kwargs: Any) -> dict:
        """Predict and explain in one call. ``task``: "auto", "text-classification", "image-classification",
        "token-classification", "regression", "segmentation" or "generation". ``inputs``: a dict of model inputs
        (or a tensor, or text with ``tokenizer``). Returns a dict with ``predictions``, ``relevance`` (input
        relevance by input name, e.g. ``relevance["input_ids"]``), ``relevance_computed``, ``task``,
        ``node_io``; for generation also ``generated_ids``, ``relevance_trace`` (one entry per explained token:
        step, token_id, token, relevance over the sequence so far, tokens) and ``scores_trace``.

        ``temperature`` divides the logits: for classification the seed is taken from the scaled output (it
        changes nothing in default mode, and contrast seeds only through single-unit outputs and thresholds);
        for generation it is the sampling temperature. Generation options are those of HuggingFace
        ``generate`` (see :class:`~dl_backtrace.pipelines.processors.GenerationSettings`), plus
        ``dlb_tokens_count`` / ``explain_tokens`` (int N, list of steps, "all", "none") and ``progress``.

        ``task="similarity"`` (sentence-embedding models: sentence-transformers, or a HuggingFace encoder whose
        states are mean-pooled) explains the cosine similarity of ``inputs`` to ``reference=`` (a text, a
        tokenised dict, or an embedding tensor): per-token relevance of the text (and of a reference text)."""
        from .pipelines.tasks import run_task

        return run_task(self, task, inputs, tokenizer, mode, multiplier, scaler, thresholding, temperature,
                        return_scores, return_relevance, return_layerwise_output, debug, **generation_kwargs)

    def sample_auto(self, tokenizer: Any, input_ids: Any, attention_mask: Any = None, **kwargs: Any) -> dict:
        """Generate with per-token relevance (greedy, temperature, top-k, top-p, beam): see :meth:`run_task`."""
        from .pipelines.sampler import DLBAutoSampler

        return DLBAutoSampler(self, tokenizer).generate(input_ids, attention_mask, **kwargs)

    def token_explainer(self, input_ids: Any, attention_mask: Any) -> Any:
        """The causal-LM explainer used by generation, traced once for every sequence length."""
        if getattr(self, "_token_explainer", None) is None:
            from .pipelines.generation import TokenExplainer

            self._token_explainer = TokenExplainer(self.model, input_ids, attention_mask, self.device)
        return self._token_explainer

    def expert_relevance(self, relevance: Relevance | None = None) -> dict[str, Any]:
        """Mixture-of-Experts models: layer path -> :class:`~dl_backtrace.moe.ExpertRelevance` (``per_token``
        [B, T, E], ``per_expert`` [B, E], ``routed``) for ``relevance`` (default: the last :meth:`evaluation`).
        Empty for a model without grouped expert products."""
        from .moe import expert_relevance

        rel = relevance if relevance is not None else self._last
        if self._run is None or rel is None:
            raise DLBacktraceError("call predict() and evaluation() before expert_relevance()")
        return expert_relevance(self._run, rel)

    @property
    def traced(self) -> Any:
        return self.engine.program.traced


class MoEBacktrace(DLBacktrace):
    """:class:`DLBacktrace` for Mixture-of-Experts models (OLMoE, Qwen2/Qwen3-MoE, Mixtral, GPT-OSS, ...): the
    same engine and rules; the constructor checks that the traced model has expert layers it can report on, and
    :meth:`expert_relevance` gives per-layer, per-expert relevance after ``predict`` + ``evaluation``."""

    def __init__(self, model: torch.nn.Module, input_for_graph: Any, **kwargs: Any) -> None:
        super().__init__(model, input_for_graph, **kwargs)
        from .moe import expert_layers

        self.expert_layers = expert_layers(self.engine.program.traced.graph)
        if not self.expert_layers:
            raise DLBacktraceError(
                "MoEBacktrace found no expert layers (grouped expert products) in this model; use DLBacktrace "
                "for dense models. HuggingFace MoE models need transformers >= 5 (grouped experts).")

    def visualize_expert_relevance(self, output_path: str = "experts.html", example: int = 0) -> str:
        """Layers x experts map of the last evaluation's expert relevance (HTML; PNG by suffix)."""
        from .viz.experts import visualize_expert_relevance

        return str(visualize_expert_relevance(self.expert_relevance(), output_path, example))
