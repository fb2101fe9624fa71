"""Named dependencies, so route signatures read like prose."""

from typing import Annotated

from fastapi import Depends, Request

from app.compute import ComputePool
from app.config import Settings


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_compute_pool(request: Request) -> ComputePool:
    return request.app.state.compute


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ComputeDep = Annotated[ComputePool, Depends(get_compute_pool)]
