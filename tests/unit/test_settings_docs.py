"""Every setting is documented where operators look: its ``Field(description=...)``
reaches the JSON schema (a ``#`` comment above the field does not). A new
setting without a description fails here."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings

import sirocco.settings as settings_module
from sirocco.settings import Settings


def undocumented(schema: dict[str, Any]) -> list[str]:
    """``Model.field`` for every property of ``schema`` and of its ``$defs``
    (the nested sections) that has no non-empty description."""
    models = {schema.get("title", "<root>"): schema, **schema.get("$defs", {})}
    return sorted(
        f"{model}.{field}"
        for model, body in models.items()
        for field, prop in body.get("properties", {}).items()
        if not str(prop.get("description") or "").strip()
    )


def _section_models() -> list[type[BaseModel]]:
    """The models ``sirocco.settings`` exports: Settings and every section."""
    return [obj for name in settings_module.__all__
            if isinstance(obj := getattr(settings_module, name), type)
            and issubclass(obj, BaseModel)]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("SIROCCO_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_every_setting_has_a_description() -> None:
    assert undocumented(Settings.model_json_schema()) == []


def test_every_exported_section_is_in_the_walk() -> None:
    schema = Settings.model_json_schema()
    walked = {schema["title"], *schema["$defs"]}
    models = _section_models()
    assert len(models) >= 15  # Settings and its fourteen section models
    assert {m.__name__ for m in models} <= walked


@pytest.mark.parametrize("model", _section_models(), ids=lambda m: m.__name__)
def test_every_field_info_has_a_description(model: type[BaseModel]) -> None:
    assert [name for name, info in model.model_fields.items()
            if not (info.description or "").strip()] == []


def test_the_check_catches_an_undocumented_field() -> None:
    class Section(BaseModel):
        documented: int = Field(default=1, description="Documented.")
        # A comment is not a description.
        bare: int = 2

    class Tree(BaseSettings):
        top: str = "x"
        section: Section = Field(default_factory=Section, description="A section.")

    assert undocumented(Tree.model_json_schema()) == ["Section.bare", "Tree.top"]


def test_default_settings_round_trip(clean_env: pytest.MonkeyPatch) -> None:
    default = Settings()
    assert Settings(**default.model_dump()) == default
    assert Settings(**default.model_dump(mode="json")) == default
    assert default.model_dump(mode="json")["llm"]["max_model_len"] == 2048


def test_environment_still_reaches_the_sections(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SIROCCO_LLM__MAX_MODEL_LEN", "4096")
    clean_env.setenv("SIROCCO_DATABASE_URL", "postgresql://u@h/db")
    clean_env.setenv("SIROCCO_ASSISTANT__HTTP_TOOLS",
                     '[{"name": "t", "description": "d", "url": "http://x"}]')
    settings = Settings()
    assert settings.llm.max_model_len == 4096
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert settings.assistant.http_tools[0].method == "POST"
