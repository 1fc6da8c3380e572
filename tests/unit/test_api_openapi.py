"""The OpenAPI schema documents every request and response model with an
example, and the native routes' errors with their real envelope."""

from __future__ import annotations

from api.app import create_app
from api.openapi import our_models
from sirocco.settings import Settings

# FastAPI's own models, which no route of ours returns (validation errors use
# ErrorEnvelope).
NOT_CHECKED = {"HTTPValidationError", "ValidationError"}


def test_every_model_has_an_example() -> None:
    schemas = create_app(Settings(env="test")).openapi()["components"]["schemas"]
    missing = sorted(n for n, s in schemas.items() if "examples" not in s)
    assert [n for n in missing if n not in NOT_CHECKED] == []
    for name in ("AnswerResult", "Citation", "ChatRequest",
                 "ConversationDetail", "ChatCompletionRequest", "ChatCompletion"):
        assert schemas[name]["examples"], name


def test_every_published_example_validates_against_its_model() -> None:
    # FastAPI writes its schema with exclude_none, which would strip the null
    # fields out of the examples (a required ``error: null`` goes missing);
    # api.openapi puts them back as each model declares them.
    schemas = create_app(Settings(env="test")).openapi()["components"]["schemas"]
    models = our_models()
    checked = set()
    for name, schema in schemas.items():
        model = models.get(name)
        if model is None or "examples" not in schema:
            continue
        assert schema["examples"] == model.model_json_schema()["examples"], name
        for example in schema["examples"]:
            model.model_validate(example)
        checked.add(name)
    assert {"ChunkPublic", "ExportFilters", "ExportOptions", "ExportPublic", "ExportRequest",
            "FeedbackCreate", "FeedbackPublic", "MessagePublic", "ReviewUpdate",
            "SpanPublic", "ToolCallPublic", "TraceDetail", "TracePublic",
            "ChatRequest", "AnswerResult", "ChatCompletion"} <= checked
    assert set(schemas) - checked - NOT_CHECKED == set()
    assert schemas["DocumentStatus"]["examples"][0]["error"] is None


def test_native_routes_document_their_error_envelope() -> None:
    paths = create_app(Settings(env="test")).openapi()["paths"]
    chat = paths["/api/chat"]["post"]["responses"]
    assert chat["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/AnswerResult")
    assert "text/event-stream" in chat["200"]["content"]
    for path, method in (("/api/chat", "post"), ("/api/documents", "get"),
                         ("/api/conversations/{conversation_id}", "delete"),
                         ("/api/keys", "post"), ("/api/jobs/{job_id}", "get")):
        err = paths[path][method]["responses"]["422"]["content"]["application/json"]
        assert err["schema"]["$ref"].endswith("/ErrorEnvelope"), path


async def test_a_source_path_with_a_nul_byte_is_422_not_500(tmp_path) -> None:
    # Found by the schemathesis run (tests/unit/test_api_fuzz.py).
    import httpx

    app = create_app(Settings(env="test", data_dir=tmp_path, auth={"enabled": False}),
                     services=object())  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        r = await client.post("/api/sources", json={"path": "/srv/a\u0000b"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_input"
