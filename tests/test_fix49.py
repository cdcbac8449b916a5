"""Four known problems (stop 46): a message holding content that changes in place, an
enum's dict keys and values against the journal, the test server that outlived its
helper, and the viewer's tree under load."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

import attrs
import pytest

from protocol import (
    AssistantMessage,
    SystemMessage,
    ToolMessage,
    UserMessage,
    to_json,
)
from protocol._fast import maker
from runtime import (
    Run,
    open_runtime,
)

from .test_review_journal4 import _Taking


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/runs.db"


# 1. A message's text fields hold text --------------------------------------------------

TEXT_FIELDS = [
    (SystemMessage, "content", {}),
    (UserMessage, "content", {}),
    (AssistantMessage, "content", {}),
    (ToolMessage, "content", {"tool_call_id": "c1", "name": "look"}),
    (ToolMessage, "tool_call_id", {"content": "seen", "name": "look"}),
    (ToolMessage, "name", {"content": "seen", "tool_call_id": "c1"}),
    (AssistantMessage, "id", {}),
    (AssistantMessage, "finish_reason", {}),
    (AssistantMessage, "model_name", {}),
]


@pytest.mark.parametrize(
    ("cls", "name", "others"), TEXT_FIELDS, ids=[f"{c.__name__}.{n}" for c, n, _ in TEXT_FIELDS]
)
@pytest.mark.parametrize(
    "given",
    [[{"type": "text", "text": "hi"}], ({"type": "text", "text": "hi"},), {"text": "hi"}, 5],
    ids=["list", "tuple", "dict", "int"],
)
def test_a_message_refuses_a_text_field_that_is_not_text(
    cls: Any, name: str, others: dict[str, Any], given: Any
) -> None:
    """A message's identity vouches for its JSON (the journal writes it once and links
    to it after): one made with content parts (OpenAI's and LangChain's multimodal
    list, which Troupe's text-only messages do not take) kept the list, and a part
    added after it was journaled read back without it (the review's finding). Made,
    rebuilt by ``attrs.evolve`` or through its plain function alike, it is refused,
    naming the field."""
    refused = rf"^{cls.__name__}\.{name} must be a str, got {type(given).__name__}"
    for make in (cls, maker(cls)):
        with pytest.raises(TypeError, match=refused):
            make(**others, **{name: given})
    made = cls(**others, **{name: "fine"})
    with pytest.raises(TypeError, match=refused):
        attrs.evolve(made, **{name: given})


def test_the_refusal_of_content_parts_says_what_to_do() -> None:
    with pytest.raises(TypeError, match=r"got list \(messages are text: join its text parts\)"):
        UserMessage([{"type": "text", "text": "hi"}])


def test_a_messages_text_may_be_a_str_subclass_or_none_where_its_type_says() -> None:
    """A ``str`` subclass (an enum's member) is text, kept as it is, and written as
    its text; the optional fields take ``None``; a subclass of a message converts as
    the message does (attrs' own ``__init__``)."""

    class Mood(enum.StrEnum):
        CALM = "calm"

    message = UserMessage(Mood.CALM)
    assert message.content is Mood.CALM
    assert json.loads(to_json(message))["content"] == "calm"
    assert AssistantMessage("x", id=None, finish_reason=None, model_name=None).id is None

    class Mine(UserMessage):
        __slots__ = ()

    assert Mine("hi").content == "hi"
    with pytest.raises(TypeError, match=r"UserMessage\.content must be a str"):
        Mine(["hi"])


class PartsSayer(_Taking[str]):
    """Says a message made with content parts, adds a part, says it again."""

    name = "parts"

    async def perform(self, message: Any, run: Run) -> str:
        parts = [{"type": "text", "text": "hi"}]
        said = UserMessage(parts)
        await run.emit([said])
        parts.append({"type": "text", "text": " there"})
        await run.emit([said])
        return "said"


async def test_a_run_making_a_message_of_content_parts_ends_with_the_error(url: str) -> None:
    """The run that makes such a message ends with an error naming the field, and its
    journal reads back as it streamed (before: it streamed the message twice, the
    second time with the part added, and its journal read back the first part alone,
    both times, as the list's repr)."""
    async with open_runtime(store=url) as rt:
        streamed = []
        async with rt.astream_events(PartsSayer(), "go", run_id="parts") as stream:
            with pytest.raises(TypeError, match=r"UserMessage\.content must be a str, got list"):
                async for event in stream:
                    streamed.append(json.loads(to_json(event)))  # noqa: PERF401  # (until it raises)
        assert [e["event"] for e in streamed] == ["on_chain_start", "on_chain_error"]
        async with rt.join("parts") as joined:
            assert [json.loads(to_json(event)) async for event in joined] == streamed
        record = await rt.get_run("parts")
    assert record.status == "error"
    assert "UserMessage.content must be a str, got list" in (record.error or "")
