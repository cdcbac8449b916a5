"""Resuming paused runs over HTTP, in every protocol the server speaks.

A run that pauses (a tool that needs a person's approval, an ``interrupt()``) ends with
its terminal event of status ``paused`` (``events``), AG-UI's ``RUN_FINISHED`` with an
interrupt outcome, or the AI SDK's ``tool-approval-request`` chunks. The person's answer
continues it as a new run, which the server starts by the same path as any other (the
same body checks, the same streams), from one of three requests:

- ``POST /runs/{run_id}/resume`` with ``{"decisions": {...}}`` (and optionally
  ``performer``, ``stream`` (``false``: wait for the result, as ``/runs/wait`` does),
  ``protocol``, ``run_id``, ``config``);
- an AG-UI ``RunAgentInput`` with ``resume`` (``[{interruptId, status, payload}]``);
- an AI SDK chat request whose last (assistant) message holds tool parts in state
  ``approval-responded``.

The ids a protocol's client answers name the paused run as well as the request
(``{run_id}/{request_id}``), so the answer alone finds what it resumes. The performer is
the one that ran the paused run, unless the body names another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, final

import attrs
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from protocol import Decision, Paused, StreamEvent
from runtime import (
    NoStoreError,
    Resume,
    RunConfig,
    Runnable,
    RunNotPausedError,
    RunPaused,
    UnknownRunError,
)

from ._body import check_id, json_body
from ._errors import BadRequest
from ._wire import PENDING_SEPARATOR, UIMessageStreamEncoder

if TYPE_CHECKING:
    from ._auth import Identity
    from ._runs import LiveRuns, RunHost, ServedStream

BODY: Final = "troupe_body"
"""Where a request's body is kept once read (``request.state``): the resume endpoint
reads it to choose between a stream and a wait, and the start path reads it again."""
RESUMES: Final = "troupe_resumes"
"""Where the resume endpoint keeps the paused run's id it was given (``request.state``)."""


class Server(Protocol):
    """What resuming needs of the app's server (the app's ``Server``, which imports
    this module)."""

    performers: dict[str, Runnable[Any]]
    runs: LiveRuns
    max_body: int
    body_timeout: float

    def the_runtime(self) -> RunHost: ...


Handler = Callable[[Any, Request], Awaitable[Response]]


async def request_body(server: Server, request: Request) -> dict[str, Any]:
    """The request's JSON body (see ``json_body``), read once."""
    body: dict[str, Any] | None = getattr(request.state, BODY, None)
    if body is None:
        body = await json_body(request, server.max_body, server.body_timeout)
        setattr(request.state, BODY, body)
    return body


@final
class Resuming:
    """A request to resume the paused run ``run_id`` with ``decisions``; ``performer``:
    the server's name for the performer that ran it (``None``: not found among them);
    ``message_id``: the AI SDK's assistant message the new run continues;
    ``thread_id``: the paused run's thread, which the new run goes on (taking its turn
    there as any run on it does)."""

    __slots__ = ("decisions", "message_id", "performer", "run_id", "thread_id")

    def __init__(
        self,
        run_id: str,
        decisions: dict[str, Any],
        performer: str | None,
        message_id: str | None = None,
        thread_id: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.decisions = decisions
        self.performer = performer
        self.message_id = message_id
        self.thread_id = thread_id

    def continue_stream(self, encoder: object) -> None:
        """An AI SDK stream continues the client's assistant message, and says which
        of its tool calls were denied (they never run)."""
        if isinstance(encoder, UIMessageStreamEncoder) and self.message_id is not None:
            denied = [
                key
                for key, decision in self.decisions.items()
                if isinstance(decision, dict) and decision.get("approve") is False
            ]
            encoder.continues(self.message_id, denied)


async def find_resume(server: Server, request: Request, body: dict[str, Any]) -> Resuming | None:
    """What ``body`` resumes, if it resumes a run: checked as far as the server can
    before the run starts (the runtime checks the decisions when it starts).

    Raises:
        BadRequest: 422 (a malformed resume, the field named), 404 (no such run, or one
            the client may not see), 501 (the server's runtime keeps no store).
    """
    found = _asked(request, body)
    if found is None:
        return None
    run_id, decisions, message_id = found
    identity: Identity | None = getattr(request.state, "identity", None)
    live = server.runs.get(run_id)
    if identity is not None and (
        (live is not None and not identity.may_see(live.owner))
        or (live is None and not identity.sees_all)
    ):
        # (a run the server no longer remembers has no owner it could check)
        raise BadRequest(404, f"no paused run {run_id!r}", "run_id")
    runtime = server.the_runtime()
    try:
        record = await runtime.get_run(run_id)
    except NoStoreError:
        # (the field that asked for a resume: the path's run, AG-UI's or the AI SDK's)
        field = "run_id" if getattr(request.state, RESUMES, None) else "resume"
        if "resume" not in body and field != "run_id":
            field = "messages"
        raise BadRequest(
            501, "the server's runtime keeps no store: no run pauses, none resumes", field
        ) from None
    except UnknownRunError:
        raise BadRequest(404, f"no run {run_id!r} in the server's store", "run_id") from None
    performer = live.performer if live is not None and live.performer else None
    if performer is None:
        performer = _performer_named(server, record.performer)
    return Resuming(run_id, decisions, performer, message_id, record.thread_id)


def _performer_named(server: Server, name: str) -> str | None:
    """The server's name for the performer whose runs are named ``name``."""
    if name in server.performers:
        return name
    for key, target in server.performers.items():
        if target.bind()[0].name == name:
            return key
    return None


def _asked(request: Request, body: dict[str, Any]) -> tuple[str, dict[str, Any], str | None] | None:
    """The paused run and the decisions ``body`` gives, in whichever shape (and the AI
    SDK's message it continues)."""
    run_id = getattr(request.state, RESUMES, None)
    if run_id is not None:
        decisions = body.get("decisions")
        if not isinstance(decisions, dict):
            raise BadRequest(
                422, "decisions must be an object: a decision by pending request id", "decisions"
            )
        return run_id, decisions, None
    if "resume" in body:
        resumed = _ag_ui_resume(body["resume"])
        return None if resumed is None else (*resumed, None)
    return _approvals(body.get("messages"))


def _split(key: object, field: str) -> tuple[str, str]:
    """The paused run's id and the request's id in an id a protocol's client answers."""
    if not isinstance(key, str) or PENDING_SEPARATOR not in key:
        shown = key[:80] if isinstance(key, str) else type(key).__name__
        raise BadRequest(
            422, f"{field} must be an id the server gave (run/request), got {shown!r}", field
        )
    run_id, _, request_id = key.partition(PENDING_SEPARATOR)
    return check_id(run_id, field), request_id


def _one_run(answers: list[tuple[str, str, Any, str]], field: str) -> tuple[str, dict[str, Any]]:
    """The paused run ``answers`` (each with the field of its id) answer, and the
    decisions by request id: one run, one answer a request."""
    runs = {run_id for run_id, _, _, _ in answers}
    if len(runs) != 1:
        raise BadRequest(422, f"{field} must answer one paused run, got {sorted(runs)}", field)
    decisions: dict[str, Any] = {}
    for _, request_id, decision, named in answers:
        if request_id in decisions:
            raise BadRequest(422, f"{named} answers {request_id!r:.80} a second time", named)
        decisions[request_id] = decision
    return runs.pop(), decisions


def _ag_ui_resume(entries: object) -> tuple[str, dict[str, Any]] | None:
    """AG-UI's ``resume``: ``[{interruptId, status: "resolved" | "cancelled", payload}]``.
    A tool call's interrupt takes ``true``/``false`` or ``{approved, reason, arguments}``
    (``cancelled``: denied); an ``interrupt()``'s, any payload (``cancelled``: ``None``)."""
    if entries is None or entries == []:  # (answers to nothing: a run like any other)
        return None
    if not isinstance(entries, list):
        raise BadRequest(422, "resume must be a list of answers", "resume")
    answers: list[tuple[str, str, Any, str]] = []
    for n, entry in enumerate(entries):
        field = f"resume[{n}]"
        if not isinstance(entry, dict):
            raise BadRequest(422, f"{field} must be an object", field)
        run_id, request_id = _split(entry.get("interruptId"), f"{field}.interruptId")
        status = entry.get("status")
        if status not in ("resolved", "cancelled"):
            raise BadRequest(
                422, f"{field}.status must be 'resolved' or 'cancelled'", f"{field}.status"
            )
        decision = _ag_ui_decision(entry, status == "cancelled", f"{field}.payload")
        answers.append((run_id, request_id, decision, f"{field}.interruptId"))
    return _one_run(answers, "resume")


def _ag_ui_decision(entry: dict[str, Any], cancelled: bool, field: str) -> Any:
    """An AG-UI answer as the runtime's decision, whichever request it answers (the
    runtime reads an approval's fields, and an interrupt's ``value``): ``cancelled``
    denies a call (an ``interrupt()`` returns ``None``); ``{approved, reason,
    arguments}`` approves or denies one (an ``interrupt()`` returns the payload as it
    is); any other payload is given as it is."""
    payload = entry.get("payload")
    if cancelled:
        return Decision(approve=False, reason="cancelled by the user")
    if isinstance(payload, dict) and isinstance(payload.get("approved"), bool):
        if not isinstance(payload.get("reason", ""), str):
            raise BadRequest(422, f"{field}.reason must be a string", f"{field}.reason")
        if not isinstance(payload.get("arguments", {}), dict):
            raise BadRequest(422, f"{field}.arguments must be an object", f"{field}.arguments")
        return Decision(
            approve=payload["approved"],
            reason=payload.get("reason"),
            arguments=payload.get("arguments"),
            value=payload,
        )
    return payload


def _approvals(messages: object) -> tuple[str, dict[str, Any], str | None] | None:
    """The AI SDK's approval answers: tool parts of the last (assistant) message in
    state ``approval-responded``, ``approval: {id, approved, reason}``."""
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return None
    parts = last.get("parts")
    answers: list[tuple[str, str, Any, str]] = []
    for n, part in enumerate(parts if isinstance(parts, list) else ()):
        if not isinstance(part, dict) or part.get("state") != "approval-responded":
            continue
        field = f"messages[{len(messages) - 1}].parts[{n}].approval"
        approval = part.get("approval")
        if not isinstance(approval, dict) or not isinstance(approval.get("approved"), bool):
            raise BadRequest(422, f"{field} must be {{id, approved, reason?}}", field)
        run_id, request_id = _split(approval.get("id"), f"{field}.id")
        decision: dict[str, Any] = {"approve": approval["approved"]}
        if approval.get("reason") is not None:
            if not isinstance(approval["reason"], str):
                raise BadRequest(422, f"{field}.reason must be a string", f"{field}.reason")
            decision["reason"] = approval["reason"]
        answers.append((run_id, request_id, decision, f"{field}.id"))
    if not answers:
        return None
    message_id = last.get("id")
    return (*_one_run(answers, "messages"), message_id if isinstance(message_id, str) else None)


@final
class ResumedStream:
    """A resuming run's stream: the runtime checks the resume as the run starts, and
    its refusals are the client's errors (404, 409, 422 naming the field)."""

    __slots__ = ("_stream", "run_id")

    def __init__(self, stream: ServedStream) -> None:
        self._stream = stream
        self.run_id = stream.run_id

    @property
    def output(self) -> Any:
        return self._stream.output

    @property
    def paused(self) -> Any:
        return getattr(self._stream, "paused", None)

    async def __aenter__(self) -> ResumedStream:
        try:
            await self._stream.__aenter__()
        except UnknownRunError as exc:
            raise BadRequest(404, str(exc), "run_id") from None
        except RunNotPausedError as exc:
            raise BadRequest(409, str(exc), "run_id") from None
        except (ValueError, TypeError) as exc:
            if not str(exc).startswith("decisions"):
                raise
            raise BadRequest(422, str(exc), "decisions") from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stream.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> ResumedStream:
        return self

    async def __anext__(self) -> StreamEvent:
        event: StreamEvent = await self._stream.__anext__()
        return event

    def ready(self, limit: int) -> list[StreamEvent]:
        return self._stream.ready(limit)

    def cancel(self) -> None:
        self._stream.cancel()


def resume_stream(
    runtime: RunHost, target: Runnable[Any], resuming: Resuming, config: RunConfig, run_id: str
) -> ResumedStream:
    """The stream of the run that resumes ``resuming``'s paused run."""
    resumes = attrs.evolve(config, resume=Resume(resuming.run_id, resuming.decisions))
    return ResumedStream(runtime.astream_events(target, None, resumes, run_id=run_id))


def outcome(stream: ServedStream) -> tuple[str, Any]:
    """A run's status and output once it ended without an error: ``ok``, or
    ``paused`` with a :class:`~protocol.Paused` of what it waits for."""
    paused = getattr(stream, "paused", None)
    if isinstance(paused, RunPaused):
        return "paused", Paused(tuple(paused.pending))
    return "ok", stream.output


def resume_routes(
    server: Server, handler: Callable[..., Any], stream: Handler, wait: Handler
) -> list[Route]:
    """``POST /runs/{run_id}/resume``: the new run streamed (``stream``, by default) or
    waited for (``"stream": false``), by the app's own handlers."""

    async def resume(server: Any, request: Request) -> Response:
        setattr(request.state, RESUMES, check_id(request.path_params["run_id"], "run_id"))
        body = await request_body(server, request)
        streamed = body.get("stream", True)
        if not isinstance(streamed, bool):
            raise BadRequest(422, "stream must be true or false", "stream")
        return await (stream if streamed else wait)(server, request)

    return [Route("/runs/{run_id}/resume", handler(server, resume), methods=["POST"])]
