"""The stores' JSON reader (``runtime._store.read_json``): orjson where it reads a text as
the standard library's ``json`` does, ``json`` elsewhere, so that what a store gives back
is exactly what ``json.loads`` gave before, value for value and type for type."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime._store import dumps, read_json


def _as_json_reads(text: str) -> tuple[str, str]:
    """What ``json.loads`` makes of ``text`` (its repr: ints and floats, -0.0, NaN and
    key order tell apart), or the type of error it raises."""
    try:
        return ("value", repr(json.loads(text)))
    except (ValueError, RecursionError) as exc:
        return ("error", type(exc).__name__)


def _as_read(text: str) -> tuple[str, str]:
    try:
        return ("value", repr(read_json(text)))
    except (ValueError, RecursionError) as exc:
        return ("error", type(exc).__name__)


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.text(alphabet=st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010))
    | st.from_regex(r"[0-9]{15,25}", fullmatch=True)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(_VALUES)
def test_what_a_store_writes_reads_back_as_json_reads_it(value: Any) -> None:
    text = dumps(value)
    assert _as_read(text) == _as_json_reads(text)


@given(_VALUES, st.integers(min_value=0), st.text(max_size=3))
def test_any_text_reads_as_json_reads_it_or_fails_as_it_fails(
    value: Any, at: int, spliced: str
) -> None:
    # a store's text changed in one place: still JSON, or not
    text = dumps(value)
    at %= len(text) + 1
    broken = text[:at] + spliced + text[at + 1 :]
    assert _as_read(broken) == _as_json_reads(broken)


@pytest.mark.parametrize(
    "text",
    [
        "[18446744073709551616]",  # 2**64: orjson would read a float
        "[-9223372036854775809]",  # -2**63 - 1
        "123456789012345678901234567890",
        '{"id":1234567890123456789012}',
        "[18446744073709551615, -9223372036854775808]",  # the ends of 64 bits
        "[NaN, Infinity, -Infinity]",
        "1e400",
        '["\\ud800", "\\udc00\\ud800", "\\ud83d\\ude00"]',
        '"\ud800"',  # a lone surrogate as a character (not what a store writes)
        "[0.00012345678901234567]",  # a float's repr with 19 digits in a row
        '{"a": 1, "a": 2}',
        "[-0, -0.0, 1E5, 1e-400]",
        '"\\u0000"',
        "[1,]",
        "[1] x",
        "",
        "[" * 5000 + "]" * 5000,  # deeper than orjson reads: json's own answer
    ],
)
def test_the_texts_orjson_reads_otherwise_are_read_by_json(text: str) -> None:
    assert _as_read(text) == _as_json_reads(text)


def test_a_journal_text_is_read_by_orjson_and_a_big_integer_by_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import orjson

    read: list[bytes] = []

    def counting(data: bytes) -> Any:
        read.append(data)
        return orjson.loads(data)

    monkeypatch.setattr("runtime._store.fast_loads", counting)
    assert read_json('[[0,1,"on_chain_start",{"input":"hi"},null,1.5]]') == [
        [0, 1, "on_chain_start", {"input": "hi"}, None, 1.5]
    ]
    assert len(read) == 1
    assert read_json("[18446744073709551616]") == [2**64]
    assert len(read) == 1  # json's: orjson would have made it a float
