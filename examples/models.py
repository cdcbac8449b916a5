"""The model an example runs on: its scripted model offline (the default), or, with
``--model NAME`` (and ``--base-url URL``, ``--api-key KEY``), an OpenAI-compatible
server's: ``python examples/triage_handoff.py --model llama3.2 --base-url
http://localhost:11434/v1``."""

import argparse
import os
from typing import Any

from actors import OpenAIChatModel, ScriptedChatModel


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="a model the server knows (default: scripted, offline)")
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"))
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY") or "none")
    parser.add_argument("question", nargs="?", help="what to ask (default: the example's)")
    return parser.parse_args()


OPTIONS = options()


def model(scripted: ScriptedChatModel, **settings: Any) -> Any:
    """``scripted`` offline, else the server's model (named like the scripted one)."""
    if OPTIONS.model is None:
        return scripted
    return OpenAIChatModel(
        OPTIONS.model,
        base_url=OPTIONS.base_url,
        api_key=OPTIONS.api_key,
        name=scripted.name,
        **settings,
    )


def question(default: str) -> str:
    return OPTIONS.question or default
