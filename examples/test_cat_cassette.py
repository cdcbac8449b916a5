"""Record the cat agent against a fake OpenAI server once, then replay it offline:
python -m pytest examples/test_cat_cassette.py"""

from pathlib import Path

import pytest
from cat import get_items

from actors import Agent, OpenAIChatModel
from actors.testing import FakeOpenAI, FakeReply, FakeToolCall, cassette_model

SCRIPT = [  # what the fake model answers, turn by turn (or a JSONL file of these)
    FakeReply(tool_calls=[FakeToolCall("get_items", {"place": "under the bed"})]),
    FakeReply("Socks and shoes are under the bed."),
]


@pytest.mark.trio
async def test_record_once_replay_offline(tmp_path: Path) -> None:
    cassette = tmp_path / "cat.json"  # in a real suite: a file kept in the repository
    async with FakeOpenAI(SCRIPT) as server:  # no cassette yet: this run records
        model = OpenAIChatModel("fake-model", base_url=server.base_url, api_key="any")
        recorded = await Agent(cassette_model(cassette, model), [get_items]).ainvoke("?")
    replayed = await Agent(cassette_model(cassette), [get_items]).ainvoke("?")  # offline
    assert replayed.output == recorded.output == "Socks and shoes are under the bed."
