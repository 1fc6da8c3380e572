"""The published OpenAPI schema and the routes that serve it.

FastAPI serializes its schema with ``exclude_none``, which also strips the
``null`` fields out of every model's examples: a published ``AnswerResult``
example then lacks its required ``error: null`` and no longer validates.
``install_openapi`` builds the schema the usual way once, then puts each
component's examples back as the model itself declares them.

``/openapi.json`` and ``/docs`` (Swagger UI, from the files ``make web``
builds) are ordinary routes here, so the app can mount them behind an API key
like every other endpoint (unless ``auth.open_endpoints`` lists "docs").
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from api.web import docs_page

# The packages whose models we publish.
OUR_PACKAGES = frozenset({"api", "assistant", "traces", "sirocco", "llm"})

router = APIRouter(tags=["docs"])


def our_models() -> dict[str, type[BaseModel]]:
    """Every pydantic model of ours, by class name (names two classes share are left out)."""
    found: dict[str, list[type[BaseModel]]] = {}
    todo: list[type[BaseModel]] = list(BaseModel.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.split(".")[0] in OUR_PACKAGES:
            found.setdefault(cls.__name__, []).append(cls)
    return {name: classes[0] for name, classes in found.items() if len(set(classes)) == 1}


def restore_examples(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with each component's ``examples`` as its model declares them."""
    models = our_models()
    for name, component in schema.get("components", {}).get("schemas", {}).items():
        model = models.get(name)
        if model is None or "examples" not in component:
            continue
        declared = model.model_json_schema().get("examples")
        if declared:
            component["examples"] = declared
    return schema


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the schema with its examples intact (cached)."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = restore_examples(default())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


@router.get("/openapi.json", include_in_schema=False)
async def openapi_json(request: Request) -> JSONResponse:
    """The OpenAPI schema of this server."""
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> Response:
    """Swagger UI over ``/openapi.json``, from local files (``api.web``): FastAPI's
    default page loads them from a CDN, blank on a network without internet."""
    return docs_page(request.app.state.settings)
