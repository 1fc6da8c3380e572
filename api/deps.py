"""FastAPI dependencies: the per-app services and settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.services import Services
from sirocco.errors import UnavailableError
from sirocco.settings import Settings


def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise UnavailableError("the server is still starting; try again shortly")
    return services


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
