"""The server secret salts user pseudonyms: never the placeholder by accident."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.app import create_app
from sirocco.errors import ConfigError
from sirocco.secrets import SECRET_FILE, with_secret_key
from sirocco.settings import PLACEHOLDER_SECRET, Settings


def test_first_start_generates_a_secret_into_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)  # env not chosen: what `make run` gets
    assert settings.auth.secret_key == PLACEHOLDER_SECRET
    first = with_secret_key(settings).auth.secret_key
    assert first != PLACEHOLDER_SECRET and len(first) >= 32
    path = tmp_path / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Kept across restarts; another data dir gets its own.
    assert with_secret_key(Settings(data_dir=tmp_path)).auth.secret_key == first
    assert with_secret_key(Settings(data_dir=tmp_path / "b")).auth.secret_key != first


def test_the_app_never_runs_on_the_placeholder_unless_dev_or_test_was_chosen(
        tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "default"))
    assert app.state.settings.auth.secret_key not in (PLACEHOLDER_SECRET, "")
    for env in ("dev", "test"):
        chosen = with_secret_key(Settings(env=env, data_dir=tmp_path / env))
        assert chosen.auth.secret_key == PLACEHOLDER_SECRET
        assert not (tmp_path / env / SECRET_FILE).exists()
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(env="prod", data_dir=tmp_path)


def test_a_configured_secret_wins_and_a_broken_file_is_an_error(tmp_path: Path) -> None:
    mine = "x" * 40
    assert with_secret_key(Settings(data_dir=tmp_path,
                                    auth={"secret_key": mine})).auth.secret_key == mine
    assert not (tmp_path / SECRET_FILE).exists()
    (tmp_path / SECRET_FILE).write_text("short\n")
    with pytest.raises(ConfigError, match="too short; delete it"):
        with_secret_key(Settings(data_dir=tmp_path))
