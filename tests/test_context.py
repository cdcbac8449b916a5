"""Run ids, per-call config and the inheritance of tags and metadata."""

from __future__ import annotations

import os
import uuid

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime import Resume, RunConfig, RunContext, make_config, new_run_id
from runtime._context import child_context, merge_tags


def test_run_ids_are_uuid7_and_sort_by_creation() -> None:
    ids = [new_run_id() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {7}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_a_forked_child_draws_its_own_run_ids() -> None:
    # Ids take their random bits from draws made for many ids at once: a child forked
    # while draws are left must not make the ids its parent makes next.
    new_run_id()  # draws made, most left
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, "".join(new_run_id() for _ in range(8)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        theirs = pipe.read()
    ours = [new_run_id() for _ in range(8)]
    child = [theirs[i : i + 36] for i in range(0, len(theirs), 36)]
    assert len(child) == 8
    # the last 16 hex digits (after the variant) are random: none shared
    assert not {i[-14:] for i in child} & {i[-14:] for i in ours}


def test_with_run_id_keeps_every_other_setting() -> None:
    full = make_config(
        run_name="n",
        tags=["a"],
        metadata={"k": 1},
        callbacks=[_Handler()],
        timeout=3.0,
        thread_id="t",
        resume=Resume("r", {"x": {"approved": True}}),
        state={"s": 1},
    )
    for config in (full, RunConfig()):
        named = config.with_run_id("run-9")
        assert named == attrs.evolve(config, run_id="run-9")
        assert named.run_id == "run-9"


class _Handler:
    async def on_event(self, event: object) -> None:
        pass


def test_make_config_from_dict_and_keywords() -> None:
    config = make_config({"run_name": "n", "tags": ["a"], "metadata": {"k": 1}}, tags=["b"])
    assert config == RunConfig(run_name="n", tags=("a", "b"), metadata={"k": 1})
    assert make_config(None) == RunConfig()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"config": {"tagz": []}}, ValueError, "unknown keys \\['tagz'\\]"),
        ({"config": 3}, TypeError, "config must be"),
        ({"tags": "abc"}, TypeError, "tags must be a list"),
        ({"tags": [1]}, TypeError, "tags must be strings"),
        ({"metadata": [1]}, TypeError, "metadata must be a dict"),
        ({"metadata": {1: 2}}, TypeError, "metadata keys must be strings"),
        ({"run_name": ""}, TypeError, "run_name"),
        ({"run_id": 5}, TypeError, "run_id"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        make_config(**kwargs)  # type: ignore[arg-type]  # wrong on purpose


@given(st.lists(st.text(max_size=3), max_size=5), st.lists(st.text(max_size=3), max_size=5))
def test_merge_tags_keeps_order_and_drops_repeats(first: list[str], more: list[str]) -> None:
    a = tuple(dict.fromkeys(first))
    merged = merge_tags(a, tuple(more))
    assert merged[: len(a)] == a
    assert set(merged) == set(a) | set(more)


def test_child_context_inherits_tags_and_metadata_but_not_the_name() -> None:
    root = RunContext("r", (), "Agent", "chain", ("root",), {"user": "u", "k": 1})
    child = child_context(
        root,
        kind="tool",
        name="t",
        tags=("own",),
        metadata={"k": 2},
        config=RunConfig(tags=("call",)),
    )
    assert child.parent_ids == ("r",)
    assert child.name == "t"
    assert child.tags == ("root", "own", "call")
    assert child.metadata == {"user": "u", "k": 2}
    assert child.root_id == "r"
    grandchild = child_context(
        child, kind="chat_model", name="m", tags=(), metadata={}, config=RunConfig()
    )
    assert grandchild.parent_ids == ("r", child.run_id)
    assert grandchild.tags == child.tags
    assert grandchild.metadata is child.metadata  # shared, not copied, when nothing is added
