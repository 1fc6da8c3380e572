"""Tools the model may call: a registry, the forced-call schema, and execution.

A ``Tool`` is a name, a description, a JSON schema for its arguments, a Python
callable (sync or async, called with the arguments as keywords) and an
optional permission check on the caller. ``ToolRegistry.specs()`` gives the
OpenAI-style ``tools`` list an engine renders into the prompt;
``ToolRegistry.execute(call)`` runs one call and always returns a
``ToolResult``: unknown tool, malformed JSON, arguments that fail the schema,
a refused permission or an exception in the tool all become an error result
the model reads as the tool message, never an exception that ends the turn.

Forcing a call (``tool_choice`` "required" or a named tool) is done by the
engine with vLLM structured outputs over ``forced_call_schema()``, then
``parse_forced_calls()`` turns the constrained JSON into ``ToolCall``s.
Tool-call ids follow mistral_common's rule: 9 characters ``[a-zA-Z0-9]``.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sirocco.errors import ConfigError, InvalidInputError
from sirocco.principal import Principal
from sirocco.types import ChatMessage, ToolCall

logger = logging.getLogger(__name__)

_ID_ALPHABET = string.ascii_letters + string.digits
TOOL_CALL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

#: ``tool_choice`` values: "auto", "none", "required", or
#: ``{"type": "function", "function": {"name": ...}}`` for one named tool.
ToolChoice = str | Mapping[str, Any]


def new_tool_call_id() -> str:
    """A fresh id that Mistral's chat templates accept (9 alphanumerics)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(9))


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    #: JSON schema of the arguments object.
    parameters: Mapping[str, Any]
    func: Callable[..., Any]
    #: ``permission(context) -> bool``; None: everyone may call it.
    permission: Callable[[Principal], bool] | None = None
    #: It changes something outside (a ticket, a mail): the answering loop never
    #: runs it on its own, the user confirms each call (``assistant.pending``).
    side_effects: bool = False

    def spec(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry for this tool."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": dict(self.parameters)}}

    def allowed(self, context: Principal) -> bool:
        """Whether ``context`` may call this tool."""
        return self.permission is None or bool(self.permission(context))


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    name: str
    #: What the model reads: the tool's output as JSON text, or ``{"error": ...}``.
    content: str
    is_error: bool = False

    def to_message(self) -> ChatMessage:
        """The ``tool`` message that answers the call in the conversation."""
        return ChatMessage(role="tool", content=self.content, tool_call_id=self.call_id)


@dataclass
class ToolRegistry:
    """Tools by name. Registration validates the schema; lookups are by exact name."""

    _tools: dict[str, Tool] = field(default_factory=dict)

    def register(self, tool: Tool) -> Tool:
        """Add ``tool``; ``ConfigError`` for a bad name, a duplicate or an invalid schema."""
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        if not _NAME.match(tool.name):
            raise ConfigError(f"tool name {tool.name!r} must match {_NAME.pattern}")
        if tool.name in self._tools:
            raise ConfigError(f"tool {tool.name!r} is already registered")
        if tool.parameters.get("type") != "object":
            raise ConfigError(f"tool {tool.name!r}: parameters must be a JSON schema of "
                              "type 'object'")
        try:
            Draft202012Validator.check_schema(dict(tool.parameters))
        except SchemaError as exc:
            raise ConfigError(f"tool {tool.name!r}: invalid JSON schema: {exc.message}") from exc
        self._tools[tool.name] = tool
        return tool

    def tool(self, *, name: str | None = None, description: str,
             parameters: Mapping[str, Any],
             permission: Callable[[Principal], bool] | None = None,
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator form of ``register`` (the function's name by default)."""
        def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
            self.register(Tool(name or func.__name__, description, parameters, func,
                               permission))
            return func
        return wrap

    def get(self, name: str) -> Tool | None:
        """The tool called ``name``, or None."""
        return self._tools.get(name)

    def names(self) -> list[str]:
        """Registered tool names, in registration order."""
        return list(self._tools)

    def specs(self, context: Principal | None = None) -> list[dict[str, Any]]:
        """OpenAI ``tools`` entries of the tools ``context`` may call (all when None)."""
        return [t.spec() for t in self._tools.values()
                if context is None or t.allowed(context)]

    async def execute(self, call: ToolCall, context: Principal | None = None) -> ToolResult:
        """Run ``call``; every failure becomes an error ``ToolResult`` (never raises,
        except cancellation). Arguments are checked against the tool's schema first."""
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import best_match

        context = context or Principal()
        tool = self._tools.get(call.name)
        if tool is None:
            return _error(call, f"unknown tool {call.name!r}; available: "
                          f"{', '.join(self._tools) or 'none'}")
        if not tool.allowed(context):
            return _error(call, f"permission denied for tool {call.name!r}")
        try:
            arguments = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as exc:
            return _error(call, f"arguments are not valid JSON: {exc.msg} (char {exc.pos})")
        if not isinstance(arguments, dict):
            return _error(call, "arguments must be a JSON object")
        problem = best_match(Draft202012Validator(dict(tool.parameters)).iter_errors(arguments))
        if problem is not None:
            where = "/".join(str(p) for p in problem.absolute_path) or "arguments"
            return _error(call, f"invalid arguments: {where}: {problem.message}")
        try:
            output = tool.func(**arguments)
            if inspect.isawaitable(output):
                output = await output
        except Exception as exc:
            logger.warning("tool failed", exc_info=True, extra={"tool": call.name})
            return _error(call, f"tool {call.name!r} failed: {type(exc).__name__}: {exc}")
        content = output if isinstance(output, str) else json.dumps(output, default=str,
                                                                     ensure_ascii=False)
        return ToolResult(call.id, call.name, content)


def _error(call: ToolCall, message: str) -> ToolResult:
    return ToolResult(call.id, call.name, json.dumps({"error": message}), is_error=True)


async def execute_tool_call(registry: ToolRegistry, call: ToolCall,
                            context: Principal | None = None) -> ChatMessage:
    """Run one call through ``registry`` and return the ``tool`` message to append
    to the conversation (an error message when the call could not run)."""
    return (await registry.execute(call, context)).to_message()


# ---------------------------------------------------------------- forced calls


def _function_name(tool: Mapping[str, Any]) -> str:
    return str(tool.get("function", tool).get("name"))


def _parameters(tool: Mapping[str, Any]) -> dict[str, Any]:
    params = tool.get("function", tool).get("parameters")
    return dict(params) if params else {"type": "object", "properties": {}}


def named_tool(tool_choice: ToolChoice | None) -> str | None:
    """The tool name a named ``tool_choice`` forces, else None."""
    if isinstance(tool_choice, Mapping):
        name = tool_choice.get("function", {}).get("name")
        if not name:
            raise InvalidInputError("tool_choice must name a function: "
                                    '{"type": "function", "function": {"name": ...}}')
        return str(name)
    return None


#: Most calls a "required" turn may make at once. Without a bound the array
#: schema lets a weak model repeat calls until max_tokens cuts the JSON off
#: (seen with the bundled 135M model), and the turn ends with no valid call.
MAX_FORCED_CALLS = 4


def forced_call_schema(tools: Sequence[Mapping[str, Any]],
                       tool_choice: ToolChoice | None, *,
                       max_calls: int = MAX_FORCED_CALLS) -> dict[str, Any] | None:
    """The JSON schema that constrains decoding to a valid call, or None when
    ``tool_choice`` forces nothing ("auto", "none", None).

    "required": an array of 1 to ``max_calls`` ``{"name", "parameters"}``
    objects, one shape per tool (vLLM's own serving uses the same shape, without
    the upper bound). Named: that tool's parameters object.
    """
    if tool_choice in (None, "auto", "none"):
        return None
    if not tools:
        raise InvalidInputError("tool_choice forces a tool call but no tools were given")
    name = named_tool(tool_choice)
    if name is not None:
        for tool in tools:
            if _function_name(tool) == name:
                return _parameters(tool)
        raise InvalidInputError(f"tool_choice names {name!r}, which is not among the tools")
    if tool_choice != "required":
        raise InvalidInputError(f"unknown tool_choice {tool_choice!r}; valid: 'auto', 'none', "
                                "'required' or a named function")
    shapes = [{"type": "object",
               "properties": {"name": {"type": "string", "enum": [_function_name(t)]},
                              "parameters": _parameters(t)},
               "required": ["name", "parameters"]} for t in tools]
    return {"type": "array", "minItems": 1, "maxItems": max(1, max_calls),
            "items": {"type": "object", "anyOf": shapes}}


def parse_forced_calls(text: str, tool_choice: ToolChoice) -> list[ToolCall]:
    """``ToolCall``s (fresh 9-character ids) from output constrained by
    ``forced_call_schema``; an empty list when ``text`` is not such JSON
    (output cut by max_tokens)."""
    try:
        value, _ = json.JSONDecoder().raw_decode(text.strip())
    except json.JSONDecodeError:
        logger.warning("forced tool call is not complete JSON: %r...", text[:300])
        return []
    name = named_tool(tool_choice)
    if name is not None:
        return [ToolCall(new_tool_call_id(), name, json.dumps(value, ensure_ascii=False))]
    calls = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            calls.append(ToolCall(new_tool_call_id(), item["name"],
                                  json.dumps(item.get("parameters", {}), ensure_ascii=False)))
    return calls
