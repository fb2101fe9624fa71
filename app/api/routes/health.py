"""Liveness: answers at once, never waits on compute."""

from fastapi import APIRouter

from app.schemas.responses import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", name="health", summary="Liveness", response_model=Health,
            description="Answers `{\"status\": \"ok\"}` at once while the process is alive, even when every "
            "compute worker is busy: for container health checks and load balancers.")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
