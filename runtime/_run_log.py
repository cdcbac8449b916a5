"""The run log (LangChain's ``astream_log``): RFC 6902 JSON patches over a run state.

The state document::

    {"id", "name", "type", "streamed_output": [...], "final_output",
     "logs": {name: {"id", "name", "type", "tags", "metadata", "start_time",
                     "streamed_output": [...], "streamed_output_str": [...],
                     "final_output", "end_time"}}}

``logs`` holds the root's descendants that pass the filters, keyed by run name; a second
run of the same name is ``name:2``, a third ``name:3``. A run that fails gets an
``error`` key. Applying every patch in order to an empty document (``None``) rebuilds
the final state. Values are the runs' own objects (serialize at the edges with
``protocol.to_json``).
"""

from __future__ import annotations

import datetime
import pprint
from collections.abc import Sequence
from typing import Any

import jsonpatch
from attrs import frozen
from jsonpointer import JsonPointer, escape

from protocol import StreamEvent

from ._filters import EventFilter

Op = dict[str, Any]


@frozen
class RunLogPatch:
    """Some operations of the run log. ``patch + patch`` gives a :class:`RunLog`."""

    ops: tuple[Op, ...]

    def __add__(self, other: RunLogPatch) -> RunLog:
        ops = (*self.ops, *other.ops)
        return RunLog(ops, apply_ops(None, ops))

    def __repr__(self) -> str:
        return f"RunLogPatch({pprint.pformat(list(self.ops))[1:-1]})"


@frozen
class RunLog(RunLogPatch):
    """Operations with the state they lead to."""

    state: Any

    def __add__(self, other: RunLogPatch) -> RunLog:
        state = apply_ops(copy_state(self.state), other.ops)
        return RunLog((*self.ops, *other.ops), state)

    def __repr__(self) -> str:
        return f"RunLog({pprint.pformat(self.state)})"


def apply_ops(state: Any, ops: Sequence[Op]) -> Any:
    """Apply RFC 6902 operations to ``state`` in place and return the result.

    ``add`` and ``replace`` (all the run log writes) are applied here without copying
    the run's objects: they go into the state as they are, whatever they are (a
    generator, a lock, a list that holds itself), as the run log promises; only the
    log's own containers (the state, an entry) are copied, so the operations stay as
    they were. Any other operation is applied by ``jsonpatch``.
    """
    for op in ops:
        kind, path = op["op"], op["path"]
        if kind not in ("add", "replace"):
            state = jsonpatch.apply_patch(state, [op], in_place=True)
            continue
        if path == "":
            state = copy_state(op["value"])
            continue
        value = op["value"]
        if isinstance(value, dict) and "streamed_output" in value:
            value = _copy_entry(value)
        *parents, last = JsonPointer(path).parts
        target = JsonPointer.from_parts(parents).resolve(state)
        if isinstance(target, list):
            if last == "-":
                target.append(value)
            elif kind == "add":
                target.insert(int(last), value)
            else:
                target[int(last)] = value
        else:
            target[last] = value
    return state


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).isoformat()


class RunLogBuilder:
    """Turns one run tree's events into the run log's patch operations (for edges that
    speak JSON patch, such as AG-UI's state deltas): ``builder.ops(event)``."""

    def __init__(
        self,
        root_id: str,
        event_filter: EventFilter | None,
        *,
        streamed_output_list: bool = True,
        final_output_as_streamed: bool = True,
    ) -> None:
        """``final_output_as_streamed``: patch ``/final_output`` with the root's chunks
        added up as they stream (LangChain's log); ``False``: with the root's output at
        its end only (for edges, where re-sending a growing total costs O(n²))."""
        self._root_id = root_id
        self._as_streamed = final_output_as_streamed
        self._filter = event_filter
        self._keys: dict[str, str] = {}
        self._names: dict[str, int] = {}
        self._streamed_output_list = streamed_output_list
        self._final: Any = None
        self._streamed = False

    def ops(self, event: StreamEvent) -> list[Op]:
        phase = event.phase
        data = event.data
        if event.run_id == self._root_id:
            if phase == "start":
                state: dict[str, Any] = {
                    "id": event.run_id,
                    "name": event.name,
                    "type": _run_type(event.kind),
                    "streamed_output": [],
                    "final_output": None,
                    "logs": {},
                }
                return [{"op": "replace", "path": "", "value": state}]
            if phase == "stream" and not self._as_streamed:
                return [{"op": "add", "path": "/streamed_output/-", "value": data.chunk}]
            if phase == "stream":
                # As LangChain: the chunk, and the chunks so far added up as the output.
                chunk = data.chunk
                self._final = chunk if not self._streamed else _added(self._final, chunk)
                self._streamed = True
                final = {"op": "replace", "path": "/final_output", "value": self._final}
                if not self._streamed_output_list:
                    return [final]
                return [{"op": "add", "path": "/streamed_output/-", "value": chunk}, final]
            if phase == "end":
                if self._streamed and self._as_streamed:
                    return []  # the streamed chunks, added up, are the final output
                return [{"op": "replace", "path": "/final_output", "value": data.output}]
            if phase == "error":
                return [{"op": "add", "path": "/error", "value": data.error}]
            return []
        if phase == "start":
            if self._filter is not None and not self._filter.accepts(
                event.name, event.kind, event.tags
            ):
                return []
            seen = self._names[event.name] = self._names.get(event.name, 0) + 1
            key = event.name if seen == 1 else f"{event.name}:{seen}"
            self._keys[event.run_id] = key
            entry = {
                "id": event.run_id,
                "name": event.name,
                "type": _run_type(event.kind),
                "tags": list(event.tags),
                "metadata": dict(event.metadata),
                "start_time": _iso(event.start_time),
                "streamed_output": [],
                "streamed_output_str": [],
                "final_output": None,
                "end_time": None,
            }
            return [{"op": "add", "path": f"/logs/{escape(key)}", "value": entry}]
        found = self._keys.get(event.run_id)
        if found is None or phase == "custom":
            return []
        path = f"/logs/{escape(found)}"
        if phase == "stream":
            # LangChain's order: the text, then the chunk.
            ops: list[Op] = []
            text = getattr(data.chunk, "content", None)
            if isinstance(text, str):
                ops.append({"op": "add", "path": f"{path}/streamed_output_str/-", "value": text})
            ops.append({"op": "add", "path": f"{path}/streamed_output/-", "value": data.chunk})
            return ops
        end_time = {"op": "add", "path": f"{path}/end_time", "value": _iso(event.end_time or 0.0)}
        if phase == "end":
            return [{"op": "add", "path": f"{path}/final_output", "value": data.output}, end_time]
        return [{"op": "add", "path": f"{path}/error", "value": data.error}, end_time]


def _run_type(kind: str) -> str:
    """LangChain's run type: chat models are logged as ``llm``."""
    return "llm" if kind == "chat_model" else kind


def _added(total: Any, chunk: Any) -> Any:
    """``total + chunk`` as LangChain adds chunks up; a chunk that cannot be added to
    the total replaces it."""
    try:
        return total + chunk
    except TypeError:
        return chunk


_ENTRY_LISTS = ("streamed_output", "streamed_output_str", "tags")


def copy_state(state: Any) -> Any:
    """A copy of the run log's own containers (the state, its lists, ``logs`` and each
    entry); the run's objects inside are shared, never copied or walked."""
    if not isinstance(state, dict):
        return state
    copy = dict(state)
    if isinstance(state.get("streamed_output"), list):
        copy["streamed_output"] = list(state["streamed_output"])
    logs = state.get("logs")
    if isinstance(logs, dict):
        copy["logs"] = {key: _copy_entry(entry) for key, entry in logs.items()}
    return copy


def _copy_entry(entry: Any) -> Any:
    if not isinstance(entry, dict):
        return entry
    copy = dict(entry)
    for key in _ENTRY_LISTS:
        if isinstance(entry.get(key), list):
            copy[key] = list(entry[key])
    if isinstance(entry.get("metadata"), dict):
        copy["metadata"] = dict(entry["metadata"])
    return copy
