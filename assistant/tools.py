"""The assistant's server-side tools, built per answer for one caller.

Built-ins: ``search_documents`` (query + filters), ``get_document`` (by id) and
``list_sources``. Company tools come from config: each ``HttpToolSettings``
becomes a tool that calls an HTTP endpoint (``http_tool``). A registry is built
for every answer (``build_tools``) with the caller's ``Principal`` closed
over, so a tool runs with the caller's permissions, never more:

- search and document reads go through the store with the caller's tenant
  and ACL in the Qdrant filter (a model-supplied filter only narrows it);
- each tool's ``permission`` is checked by ``llm.tools.ToolRegistry.execute``
  for every call, whatever the model was told by a document, and a refusal
  is returned to the model as a tool error (and kept in the trace's messages);
- HTTP tools get the caller's identity in ``X-Sirocco-*`` headers.

Chunks a tool returns join the answer's numbered sources (``SourceBook``), so
the model can cite them as ``[n]`` like the chunks of the first retrieval.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from llm.tools import Tool, ToolRegistry
from retrieval.store import SearchFilter, Store
from sirocco.errors import InvalidInputError, NotFoundError, UnavailableError
from sirocco.principal import Principal
from sirocco.settings import HttpToolSettings, Settings
from sirocco.types import SearchHit

logger = logging.getLogger(__name__)

BUILTIN_TOOLS = ("search_documents", "get_document", "list_sources")
MAX_SEARCH_RESULTS = 10
MAX_DOCUMENT_CHUNKS = 50
_RESULT_TEXT_CHARS = 800

#: ``search(query, top_k, filter) -> hits``: the assistant's own retrieval.
Search = Callable[[str, int, SearchFilter], Awaitable[list[SearchHit]]]
#: ``list_sources(caller) -> [{"id", "name", "kind", "documents"}]``: sources
#: holding documents the caller may see (implemented next to the SQL tables).
SourceCatalog = Callable[[Principal], Sequence[dict[str, Any]]]


@dataclass
class SourceBook:
    """The numbered sources of one answer: retrieval's first, then what tools
    returned. ``texts[n]`` is the text the model read under number ``n``."""

    hits: list[SearchHit] = field(default_factory=list)
    texts: dict[int, str] = field(default_factory=dict)

    def add(self, hit: SearchHit) -> int:
        """The number of ``hit`` (an already numbered chunk keeps its number)."""
        for n, known in enumerate(self.hits, start=1):
            if known.chunk_id == hit.chunk_id:
                return n
        self.hits.append(hit)
        self.texts[len(self.hits)] = hit.text
        return len(self.hits)


def _filter_schema() -> dict[str, Any]:
    # Tight bounds: under structured outputs they also bound what a model generates.
    # Bounded patterns, no maxLength beside them: xgrammar refuses a pattern
    # combined with a length constraint.
    def strings(pattern: str) -> dict[str, Any]:
        return {"type": "array", "maxItems": 5,
                "items": {"type": "string", "pattern": pattern}}

    ids = strings(UUID_PATTERN)  # documents and sources have uuid4 ids
    return {"type": "object", "additionalProperties": False,
            "properties": {"doc_ids": ids, "source_ids": ids,
                           "tags": strings(r"^[^\s]{1,32}$"),
                           "mime_types": strings(r"^[a-z]{1,20}/[a-z0-9.+-]{1,60}$")}}


UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


SEARCH_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["query"],
    "properties": {
        "query": {"type": "string", "minLength": 1, "maxLength": 300},
        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_SEARCH_RESULTS},
        "filters": _filter_schema(),
    },
}
GET_DOCUMENT_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["doc_id"],
    "properties": {"doc_id": {"type": "string", "minLength": 1, "maxLength": 64}},
}
NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {},
                                "additionalProperties": False}


def _short(text: str, limit: int = _RESULT_TEXT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rstrip() + " [...]"


def _search_tool(search: Search, book: SourceBook, caller: Principal, default_k: int) -> Tool:
    async def search_documents(query: str, top_k: int | None = None,
                               filters: dict[str, Any] | None = None) -> dict[str, Any]:
        # The caller is set here, after the model's filters: they can only narrow.
        flt = SearchFilter(caller=caller, **(filters or {}))
        hits = await search(query, top_k or default_k, flt)
        return {"results": [
            {"n": book.add(h), "doc_id": h.doc_id, "title": h.title, "source": h.source,
             "page": h.page, "text": _short(h.text)} for h in hits]}

    return Tool("search_documents",
                "Search the user's indexed documents. Returns numbered passages; cite them "
                "as [n].", SEARCH_SCHEMA, search_documents)


def fetch_document(store: Store, embed: Callable[[str], list[float]], caller: Principal,
                   doc_id: str) -> list[SearchHit]:
    """The chunks of ``doc_id`` the caller may see, in text order; ``NotFoundError``
    when there are none (unknown, or not visible: the same answer, so a caller
    learns nothing about documents outside their ACL)."""
    # A filter-only read: any query vector returns every chunk within top_k.
    hits = store.search(embed(doc_id), top_k=MAX_DOCUMENT_CHUNKS, mode="dense",
                        filter=SearchFilter(caller=caller, doc_ids=[doc_id]))
    hits = sorted((h for h in hits if h.doc_id == doc_id), key=lambda h: h.chunk_index)
    if not hits:
        raise NotFoundError(f"document {doc_id!r} not found")
    return hits


def _document_tool(store: Store, embed: Callable[[str], list[float]], book: SourceBook,
                   caller: Principal, max_chars: int) -> Tool:
    async def get_document(doc_id: str) -> dict[str, Any]:
        hits = await asyncio.to_thread(fetch_document, store, embed, caller, doc_id)
        text = "\n".join(h.text for h in hits)[:max_chars]
        first, last = hits[0], hits[-1]
        whole = replace(first, chunk_id=f"{doc_id}:document", text=text,
                        end_char=first.start_char + len(text) if len(hits) == 1
                        else last.end_char, covers=tuple(h.chunk_id for h in hits))
        n = book.add(whole)
        return {"n": n, "doc_id": doc_id, "title": first.title, "source": first.source,
                "chunks": len(hits), "text": text}

    return Tool("get_document", "Read one document (by doc_id, as search results give it). "
                "Cite it as [n].", GET_DOCUMENT_SCHEMA, get_document)


def _sources_tool(catalog: SourceCatalog | None, caller: Principal) -> Tool:
    async def list_sources() -> dict[str, Any]:
        if catalog is None:
            return {"sources": []}
        return {"sources": list(await asyncio.to_thread(catalog, caller))}

    return Tool("list_sources", "List the document sources the user can search.",
                NO_ARGUMENTS, list_sources)


def http_permission(config: HttpToolSettings) -> Callable[[Principal], bool]:
    """Who may call an HTTP tool: its tenants (all when unset), then admins or
    members of one of ``allowed_groups`` (everyone when unset)."""
    def allowed(context: Principal) -> bool:
        if config.tenants is not None and context.tenant not in config.tenants:
            return False
        if config.allowed_groups is None or context.is_admin:
            return True
        return bool(set(config.allowed_groups) & set(context.groups))
    return allowed


def http_tool(config: HttpToolSettings, context: Principal, *,
              transport: Any | None = None, max_chars: int = 4000) -> Tool:
    """A tool calling ``config.url``: JSON body (POST/PUT) or query string (GET),
    the caller's identity in headers; the response (JSON or text, cut to
    ``max_chars``) is the result, an HTTP error status a tool error."""
    import httpx

    async def call(**arguments: Any) -> Any:
        headers = {**config.headers, "X-Sirocco-Tenant": context.tenant,
                   "X-Sirocco-User": context.user or "",
                   "X-Sirocco-Groups": ",".join(context.groups)}
        get = config.method == "GET"
        async with httpx.AsyncClient(timeout=config.timeout_s, transport=transport) as client:
            response = await client.request(config.method, config.url, headers=headers,
                                            params=arguments if get else None,
                                            json=None if get else arguments)
        if response.status_code >= 400:
            raise UnavailableError(f"{config.name} answered HTTP {response.status_code}: "
                                   f"{response.text[:200]}")
        try:
            return json.loads(json.dumps(response.json())[:max_chars])
        except ValueError:
            return response.text[:max_chars]

    return Tool(config.name, config.description, config.parameters, call,
                http_permission(config), side_effects=config.side_effects)


@dataclass
class ToolKit:
    """What ``build_tools`` needs besides the caller (the assistant's ports)."""

    store: Store
    embed: Callable[[str], list[float]]
    search: Search
    catalog: SourceCatalog | None = None
    #: httpx transport for HTTP tools (tests); None: the network.
    transport: Any | None = None


def build_tools(kit: ToolKit, settings: Settings, context: Principal, book: SourceBook,
                names: Sequence[str]) -> ToolRegistry:
    """A registry of the tools ``names`` (built-ins and configured HTTP tools) for
    one answer by ``context``. ``InvalidInputError`` for a name that is neither.
    Tools the caller may not use are registered too (with their permission), so
    a call to one is refused and reported rather than treated as unknown; they
    are not offered to the model (``ToolRegistry.specs(context)``)."""
    caller = Principal(tenant=context.tenant, user=context.user, groups=context.groups)
    cfg = settings.assistant
    configured = {t.name: t for t in cfg.http_tools}
    registry = ToolRegistry()
    for name in dict.fromkeys(names):
        if name == "search_documents":
            registry.register(_search_tool(kit.search, book, caller,
                                           settings.retrieval.top_k))
        elif name == "get_document":
            registry.register(_document_tool(kit.store, kit.embed, book, caller,
                                             cfg.max_tool_result_chars))
        elif name == "list_sources":
            registry.register(_sources_tool(kit.catalog, caller))
        elif name in configured:
            registry.register(http_tool(configured[name], context, transport=kit.transport,
                                        max_chars=cfg.max_tool_result_chars))
        else:
            valid = [*BUILTIN_TOOLS, *configured]
            raise InvalidInputError(f"unknown tool {name!r}; valid: {', '.join(valid)}",
                                    param="tools")
    # Every configured tool is known, requested or not: a call the model was
    # talked into is refused by a permission check (and reported as such).
    for name, config in configured.items():
        if registry.get(name) is None:
            tool = http_tool(config, context, transport=kit.transport)
            registry.register(replace(tool, permission=_not_offered))
    return registry


def _not_offered(context: Principal) -> bool:
    """Tools not offered for this answer may not be called in it."""
    return False


def offered_specs(registry: ToolRegistry, names: Sequence[str],
                  context: Principal) -> list[dict[str, Any]]:
    """The OpenAI ``tools`` entries of ``names`` that ``context`` may call."""
    tools = [registry.get(n) for n in dict.fromkeys(names)]
    return [t.spec() for t in tools if t is not None and t.allowed(context)]


def tool_choice_for(choice: str | None, names: Sequence[str]) -> str | dict[str, Any] | None:
    """The engine's ``tool_choice`` for a native request's ``tool_choice``: None for
    "auto" or unset, "required", or the named tool; ``InvalidInputError`` when it
    asks for a tool that is not among ``names``."""
    if choice in (None, "auto"):
        return None
    if not names:
        raise InvalidInputError(f"tool_choice {choice!r} needs tools", param="tool_choice")
    if choice == "required":
        return "required"
    if choice not in names:
        raise InvalidInputError(f"tool_choice names {choice!r}, which is not among the tools "
                                f"({', '.join(names)})", param="tool_choice")
    return {"type": "function", "function": {"name": choice}}


def available_tools(settings: Settings, context: Principal) -> list[str]:
    """Names of the tools ``context`` may use: built-ins and permitted HTTP tools."""
    return [*BUILTIN_TOOLS, *(t.name for t in settings.assistant.http_tools
                              if http_permission(t)(context))]
