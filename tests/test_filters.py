"""include/exclude filters on names, kinds and tags."""

from __future__ import annotations

import pytest

from runtime import EventFilter


def test_no_filter_is_none() -> None:
    assert EventFilter.build() is None


@pytest.mark.parametrize(
    ("kwargs", "name", "kind", "tags", "accepted"),
    [
        ({"include_names": ["a"]}, "a", "tool", (), True),
        ({"include_names": ["a"]}, "b", "tool", (), False),
        ({"include_types": ["tool"]}, "b", "tool", (), True),
        ({"include_tags": ["x"]}, "b", "chain", ("y", "x"), True),
        ({"include_tags": ["x"]}, "b", "chain", ("y",), False),
        ({"include_names": ["a"], "include_types": ["tool"]}, "b", "tool", (), True),
        ({"exclude_names": ["a"]}, "a", "tool", (), False),
        ({"exclude_types": ["tool"]}, "a", "tool", (), False),
        ({"exclude_tags": ["x"]}, "a", "tool", ("x",), False),
        ({"include_types": ["tool"], "exclude_names": ["a"]}, "a", "tool", (), False),
        ({"exclude_tags": ["x"]}, "a", "tool", (), True),
    ],
)
def test_filter_semantics(
    kwargs: dict[str, list[str]], name: str, kind: str, tags: tuple[str, ...], accepted: bool
) -> None:
    made = EventFilter.build(**kwargs)
    assert made is not None
    assert made.accepts(name, kind, tags) is accepted


def test_a_bare_string_is_refused() -> None:
    with pytest.raises(TypeError, match=r"include_names must be a list of strings.*\['Agent'\]"):
        EventFilter.build(include_names="Agent")
    with pytest.raises(TypeError, match="exclude_tags must be strings"):
        EventFilter.build(exclude_tags=[1])  # type: ignore[list-item]  # wrong on purpose
