"""The tool registry, forced-call schemas, and vLLM's native Mistral parser."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from llm.tools import (
    TOOL_CALL_ID,
    Tool,
    ToolRegistry,
    execute_tool_call,
    forced_call_schema,
    new_tool_call_id,
    parse_forced_calls,
)
from sirocco.errors import ConfigError, InvalidInputError
from sirocco.principal import Principal
from sirocco.types import ToolCall
from tests.support import need_module

SEARCH_PARAMS = {"type": "object", "properties": {
    "query": {"type": "string", "minLength": 1},
    "top_k": {"type": "integer", "minimum": 1, "maximum": 20}},
    "required": ["query"], "additionalProperties": False}


def registry() -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(description="Search the documents.", parameters=SEARCH_PARAMS)
    async def search(query: str, top_k: int = 3) -> dict:
        await asyncio.sleep(0)
        return {"hits": [f"{query}-{i}" for i in range(top_k)]}

    reg.register(Tool("delete_everything", "Admins only.", {"type": "object"},
                      lambda: "deleted", permission=lambda ctx: ctx.is_admin))
    reg.register(Tool("broken", "Always fails.", {"type": "object"},
                      lambda: 1 / 0))
    return reg


def call(name: str, arguments: str) -> ToolCall:
    return ToolCall(new_tool_call_id(), name, arguments)


def test_ids_follow_mistral_common_rule() -> None:
    ids = {new_tool_call_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(TOOL_CALL_ID.match(i) for i in ids)


def test_specs_are_openai_tools_filtered_by_permission() -> None:
    reg = registry()
    assert [s["function"]["name"] for s in reg.specs()] == ["search", "delete_everything",
                                                            "broken"]
    names = [s["function"]["name"] for s in reg.specs(Principal(user="u"))]
    assert names == ["search", "broken"]
    assert reg.specs()[0] == {"type": "function", "function": {
        "name": "search", "description": "Search the documents.", "parameters": SEARCH_PARAMS}}


def test_registration_refuses_bad_tools() -> None:
    reg = registry()
    with pytest.raises(ConfigError, match="already registered"):
        reg.register(Tool("search", "again", {"type": "object"}, lambda: None))
    with pytest.raises(ConfigError, match="invalid JSON schema"):
        reg.register(Tool("bad", "x", {"type": "object", "properties": {"a": {"type": 5}}},
                          lambda: None))
    with pytest.raises(ConfigError, match="type 'object'"):
        reg.register(Tool("arr", "x", {"type": "array"}, lambda: None))
    with pytest.raises(ConfigError, match="must match"):
        reg.register(Tool("has space", "x", {"type": "object"}, lambda: None))


async def test_valid_call_runs_and_answers_with_a_tool_message() -> None:
    c = call("search", '{"query": "whales", "top_k": 2}')
    message = await execute_tool_call(registry(), c)
    assert (message.role, message.tool_call_id) == ("tool", c.id)
    assert json.loads(message.content) == {"hits": ["whales-0", "whales-1"]}


@pytest.mark.parametrize(("name", "arguments", "context", "expected"), [
    ("search", '{"top_k": 2}', None, "invalid arguments: arguments: 'query' is a required"),
    ("search", '{"query": "x", "top_k": 99}', None, "invalid arguments: top_k: 99 is greater"),
    ("search", '{"query": "x", "extra": 1}', None, "Additional properties are not allowed"),
    ("search", '{"query": ', None, "arguments are not valid JSON"),
    ("search", '["x"]', None, "arguments must be a JSON object"),
    ("nope", "{}", None, "unknown tool 'nope'; available: search, delete_everything, broken"),
    ("delete_everything", "{}", Principal(user="u"), "permission denied"),
    ("broken", "{}", None, "tool 'broken' failed: ZeroDivisionError"),
])
async def test_bad_calls_become_tool_errors_not_exceptions(name, arguments, context,
                                                           expected) -> None:
    result = await registry().execute(call(name, arguments), context)
    assert result.is_error
    assert expected in json.loads(result.content)["error"]


async def test_admin_may_call_the_guarded_tool() -> None:
    result = await registry().execute(call("delete_everything", "{}"),
                                      Principal(is_admin=True))
    assert (result.is_error, result.content) == (False, "deleted")


def test_required_schema_accepts_only_valid_calls() -> None:
    schema = forced_call_schema(registry().specs(), "required")
    validator = Draft202012Validator(schema)
    assert validator.is_valid([{"name": "search", "parameters": {"query": "q"}}])
    assert not validator.is_valid([])
    assert not validator.is_valid([{"name": "search", "parameters": {}}])
    assert not validator.is_valid([{"name": "other", "parameters": {"query": "q"}}])
    # Bounded, so a model that keeps repeating calls still closes the array.
    five = [{"name": "search", "parameters": {"query": "q"}}] * 5
    assert not validator.is_valid(five)
    assert Draft202012Validator(
        forced_call_schema(registry().specs(), "required", max_calls=5)).is_valid(five)


def test_named_schema_is_the_tool_parameters() -> None:
    choice = {"type": "function", "function": {"name": "search"}}
    assert forced_call_schema(registry().specs(), choice) == SEARCH_PARAMS
    assert forced_call_schema(registry().specs(), "auto") is None
    assert forced_call_schema(registry().specs(), "none") is None
    with pytest.raises(InvalidInputError, match="not among the tools"):
        forced_call_schema(registry().specs(), {"type": "function", "function": {"name": "x"}})
    with pytest.raises(InvalidInputError, match="no tools"):
        forced_call_schema([], "required")


def test_parse_forced_calls() -> None:
    calls = parse_forced_calls('[{"name": "search", "parameters": {"query": "q"}}]',
                               "required")
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("search", {"query": "q"})]
    assert TOOL_CALL_ID.match(calls[0].id)
    named = parse_forced_calls('{"query": "x"}', {"type": "function",
                                                  "function": {"name": "search"}})
    assert [(c.name, c.arguments) for c in named] == [("search", '{"query": "x"}')]
    assert parse_forced_calls('[{"name": "search", "param', "required") == []


@pytest.fixture(scope="module")
def mistral_v3_tokenizer(tmp_path_factory):  # type: ignore[no-untyped-def]
    """Mistral 7B v0.3's tokenizer, as mistral_common ships it (has [TOOL_CALLS])."""
    need_module("vllm")
    import mistral_common
    from vllm.tokenizers.mistral import MistralTokenizer

    src = Path(mistral_common.__file__).parent / "data" / \
        "mistral_instruct_tokenizer_240323.model.v3"
    folder = tmp_path_factory.mktemp("mistral-v3")
    shutil.copy(src, folder / "tokenizer.model.v3")
    return MistralTokenizer.from_pretrained(str(folder))


def test_native_mistral_parser_extracts_calls(mistral_v3_tokenizer) -> None:
    from llm.vllm_tools import NativeToolParser

    parser = NativeToolParser("mistral", mistral_v3_tokenizer)
    assert parser.start_marker == "[TOOL_CALLS]"
    content, calls = parser.extract(
        'Let me look. [TOOL_CALLS][{"name": "search", "arguments": {"query": "whales"}}]',
        registry().specs())
    assert content == "Let me look. "
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("search",
                                                                   {"query": "whales"})]
    assert TOOL_CALL_ID.match(calls[0].id)
    text, none = parser.extract("Just text.", registry().specs())
    assert (text, none) == ("Just text.", [])


def test_unknown_parser_lists_valid_ones(mistral_v3_tokenizer) -> None:
    from llm.vllm_tools import NativeToolParser

    with pytest.raises(ConfigError, match="unknown tool parser 'nope'; valid: .*mistral"):
        NativeToolParser("nope", mistral_v3_tokenizer)


def test_held_back_tail() -> None:
    from llm.vllm_tools import held_back

    assert held_back("abc[TOOL", "[TOOL_CALLS]") == 5
    assert held_back("abc", "[TOOL_CALLS]") == 0
    assert held_back("abc[", None) == 0
