from __future__ import annotations

from fastapi import APIRouter

from sirocco import __version__

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process serves HTTP (backing services are not probed)."""
    return {"status": "ok", "version": __version__}
