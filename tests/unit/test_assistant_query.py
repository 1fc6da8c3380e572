"""When a question is rewritten, and what happens to a junk rewrite."""

from __future__ import annotations

from assistant.query import acceptable, fallback_query, needs_rewrite, standalone_query
from sirocco.types import ChatMessage
from tests.doubles import ScriptedEngine

HISTORY = [ChatMessage("user", "What is the travel policy for flights?"),
           ChatMessage("assistant", "Economy class under six hours.")]


def test_only_follow_ups_with_history_are_rewritten() -> None:
    assert needs_rewrite("And what about it for trains?", HISTORY)
    assert needs_rewrite("Contractors?", HISTORY)
    assert not needs_rewrite("What is the parking policy for visitors?", HISTORY)
    assert not needs_rewrite("And what about it?", [])
    assert not needs_rewrite("And it?", HISTORY, "off")
    assert needs_rewrite("What is the parking policy for visitors?", HISTORY, "always")


def test_a_rewrite_must_be_one_short_line_sharing_a_word() -> None:
    assert acceptable("What is the travel policy for trains?", "And trains?", HISTORY)
    assert not acceptable("Bonjour!", "And trains?", HISTORY)
    assert not acceptable("x " * 300, "And trains?", HISTORY)


async def test_junk_from_the_model_falls_back_to_joining_the_questions() -> None:
    engine = ScriptedEngine(["Sure! Here you go:"])
    query = await standalone_query(engine, "And trains?", HISTORY)
    assert query == fallback_query("And trains?", HISTORY)
    assert query == "What is the travel policy for flights? And trains?"
