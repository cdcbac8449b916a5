"""Test your own agents the way Troupe tests itself.

- :func:`check_events` / :func:`check_steps`: DESIGN.md's promises 1-4 on any stream.
- :func:`agent_scripts`, :func:`tool_calls`, :func:`faults`: Hypothesis strategies of
  scripted model behaviour over your tools, nasty cases included; :func:`team_scripts`
  and :func:`guardrail_outcomes` for several agents with handoffs and guardrails.
- :func:`run_events`: run with drawn faults, keep what the consumer and the tree saw.
- :class:`RecordingChatModel` / :class:`ReplayChatModel` / :func:`cassette_model`: record
  a real model's turns to a cassette file and replay them offline.
- :func:`run_watched` / :func:`hang_watchdog`: a hang prints trio's task tree.
- :class:`FakeOpenAI`: an OpenAI-compatible chat-completions server on 127.0.0.1,
  scripted by replies or a function, with faults on request (``troupe fake-openai`` on
  the command line).

The pytest plugin (``actors.pytest_plugin``, registered by entry point) adds fixtures on
top: ``troupe_runtime``, ``troupe_events``, ``troupe_watchdog``. The strategies need
Hypothesis and the fixtures pytest-trio (the ``testing`` extra); the rest needs neither.
"""

from ._cassette import CASSETTE_FORMAT as CASSETTE_FORMAT
from ._cassette import CassetteMismatchError as CassetteMismatchError
from ._cassette import ModelIdentity as ModelIdentity
from ._cassette import RecordedTurn as RecordedTurn
from ._cassette import RecordingChatModel as RecordingChatModel
from ._cassette import ReplayChatModel as ReplayChatModel
from ._cassette import cassette_model as cassette_model
from ._cassette import first_difference as first_difference
from ._cassette import load_cassette as load_cassette
from ._cassette import normalise_request as normalise_request
from ._collect import EventCollector as EventCollector
from ._collect import Faults as Faults
from ._collect import RaisingHandler as RaisingHandler
from ._collect import RunEvents as RunEvents
from ._collect import run_events as run_events
from ._fake_openai import FakeOpenAI as FakeOpenAI
from ._fake_openai import FakeReply as FakeReply
from ._fake_openai import FakeToolCall as FakeToolCall
from ._fake_openai import Fault as Fault
from ._fake_openai import RawAnswer as RawAnswer
from ._fake_openai import ReceivedRequest as ReceivedRequest
from ._fake_openai import load_fake_script as load_fake_script
from ._fake_openai import main as fake_openai_main
from ._promises import LOCAL_METADATA as LOCAL_METADATA
from ._promises import PROMISES as PROMISES
from ._promises import PromiseBroken as PromiseBroken
from ._promises import RunTrace as RunTrace
from ._promises import check_events as check_events
from ._promises import check_steps as check_steps
from ._watchdog import HANG_EXIT_CODE as HANG_EXIT_CODE
from ._watchdog import hang_dir as hang_dir
from ._watchdog import hang_watchdog as hang_watchdog
from ._watchdog import run_watched as run_watched
from ._watchdog import task_tree as task_tree

try:  # the strategies need Hypothesis (the 'testing' extra); the rest does not
    from ._strategies import ALPHABET as ALPHABET
    from ._strategies import MALFORMED_ARGUMENTS as MALFORMED_ARGUMENTS
    from ._strategies import MODEL_ERROR as MODEL_ERROR
    from ._strategies import UNKNOWN_TOOL as UNKNOWN_TOOL
    from ._strategies import WORDS as WORDS
    from ._strategies import GuardrailOutcome as GuardrailOutcome
    from ._strategies import agent_scripts as agent_scripts
    from ._strategies import faults as faults
    from ._strategies import guardrail_outcomes as guardrail_outcomes
    from ._strategies import invalid_tool_arguments as invalid_tool_arguments
    from ._strategies import json_values as json_values
    from ._strategies import script_as_python as script_as_python
    from ._strategies import team_scripts as team_scripts
    from ._strategies import texts as texts
    from ._strategies import tool_arguments as tool_arguments
    from ._strategies import tool_calls as tool_calls
except ModuleNotFoundError as _missing:
    if _missing.name != "hypothesis":
        raise
    _NEEDS_HYPOTHESIS = frozenset(
        {
            "ALPHABET",
            "MALFORMED_ARGUMENTS",
            "MODEL_ERROR",
            "UNKNOWN_TOOL",
            "WORDS",
            "GuardrailOutcome",
            "agent_scripts",
            "faults",
            "guardrail_outcomes",
            "invalid_tool_arguments",
            "json_values",
            "script_as_python",
            "team_scripts",
            "texts",
            "tool_arguments",
            "tool_calls",
        }
    )

    def __getattr__(name: str) -> object:
        if name in _NEEDS_HYPOTHESIS:
            raise ImportError(
                f"actors.testing.{name} needs Hypothesis: pip install 'trio-troupe[testing]'"
            )
        raise AttributeError(f"module 'actors.testing' has no attribute {name!r}")


__all__ = [
    # promises
    "LOCAL_METADATA",
    "PROMISES",
    "PromiseBroken",
    "RunTrace",
    "check_events",
    "check_steps",
    # strategies
    "ALPHABET",
    "MALFORMED_ARGUMENTS",
    "MODEL_ERROR",
    "UNKNOWN_TOOL",
    "WORDS",
    "Faults",
    "GuardrailOutcome",
    "agent_scripts",
    "faults",
    "guardrail_outcomes",
    "invalid_tool_arguments",
    "json_values",
    "script_as_python",
    "team_scripts",
    "texts",
    "tool_arguments",
    "tool_calls",
    # running under faults
    "EventCollector",
    "RaisingHandler",
    "RunEvents",
    "run_events",
    # cassettes
    "CASSETTE_FORMAT",
    "CassetteMismatchError",
    "ModelIdentity",
    "RecordedTurn",
    "RecordingChatModel",
    "ReplayChatModel",
    "cassette_model",
    "first_difference",
    "load_cassette",
    "normalise_request",
    # a fake OpenAI server
    "FakeOpenAI",
    "FakeReply",
    "FakeToolCall",
    "Fault",
    "RawAnswer",
    "ReceivedRequest",
    "fake_openai_main",
    "load_fake_script",
    # hangs
    "HANG_EXIT_CODE",
    "hang_dir",
    "hang_watchdog",
    "run_watched",
    "task_tree",
]
