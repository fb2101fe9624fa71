"""Liveness: answers at once, never waits on compute."""

from fastapi import APIRouter

from app.schemas.responses import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", name="health", summary="Liveness", response_model=Health)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
