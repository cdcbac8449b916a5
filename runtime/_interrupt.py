"""``interrupt()``: pause a run until a person answers."""

from __future__ import annotations

from typing import Any

from protocol import PendingRequest, SerializationError, unstructure_any

from ._context import current_run_var, current_runtime_var
from ._core import cancel_point
from ._errors import NoRuntimeError, NoStoreError, RunPaused


async def interrupt(payload: Any = None) -> Any:
    """Pause the run until a person answers ``payload`` (a JSON value or protocol
    object: what to show them): the run, and every run above it, ends paused, and its
    terminal event carries the request (kind ``interrupt``). Resumed
    (``Runtime.resume``) with a decision for it, the run is replayed and this call
    returns the decision's ``value``.

    Whatever the calling code did before the call is done again on resume (it runs
    again from its start), but every request it made that had ended is answered from
    the journal. A cancel point.

    Raises:
        RunPaused: the run pauses (let it through).
        NoRuntimeError: not called inside a run.
        NoStoreError: the runtime has no store (a pause must outlive the process).
        TypeError: ``payload`` has no JSON form.
    """
    await cancel_point()
    context = current_run_var.get()
    if context is None:
        raise NoRuntimeError("interrupt() pauses a run: call it inside one (a tool, a performer)")
    try:
        shown = unstructure_any(payload)
    except SerializationError as exc:
        raise TypeError(f"interrupt(): {exc}") from None
    key = f"{context.resumes or context.run_id}:{context.next_interrupt()}"
    decision = context.decisions.get(key)
    if decision is not None:
        return decision.value
    runtime = current_runtime_var.get()
    if runtime is None or runtime.journal is None:
        raise NoStoreError(
            "interrupt() pauses the run until a person answers, which must outlive the "
            "process: open the runtime with a store (open_runtime(store='sqlite:///runs.db'))"
        )
    raise RunPaused([PendingRequest(key, "interrupt", context.name, shown)])
