"""Exceptions raised by dl_backtrace. Each one says what went wrong and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DLBacktraceError",
    "UnsupportedOp",
    "UnsupportedOpError",
    "NodeExecutionError",
    "TraceError",
]


class DLBacktraceError(RuntimeError):
    """Base class of the errors this library raises on purpose."""


@dataclass(frozen=True)
class UnsupportedOp:
    """One graph node whose op has no relevance rule."""

    op: str
    node: str
    module: str
    location: str

    def __str__(self) -> str:
        where = f" in module '{self.module}'" if self.module else ""
        loc = f" ({self.location})" if self.location else ""
        return f"{self.op} at node '{self.node}'{where}{loc}"


class UnsupportedOpError(DLBacktraceError):
    """Raised before execution when relevance would have to flow through ops without a rule."""

    def __init__(self, ops: list[UnsupportedOp]) -> None:
        self.ops = list(ops)
        names = sorted({o.op for o in self.ops})
        lines = "\n".join(f"  - {o}" for o in self.ops)
        super().__init__(
            f"{len(names)} op(s) on the relevance path have no relevance rule: {', '.join(names)}\n{lines}\n"
            "Relevance is never passed through silently. Rewrite that part of the model with supported ops, "
            "register a rule with dl_backtrace.rules.register(...), or ask for pass-through explicitly with "
            "DLBacktrace(..., passthrough_unsupported=True)."
        )


class NodeExecutionError(DLBacktraceError):
    """A node of the traced graph failed while executing; names the node and the user code."""


class TraceError(DLBacktraceError):
    """The model could not be traced or the inputs do not match the traced signature."""
