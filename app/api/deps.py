"""Named dependencies, so route signatures read like prose. (The tensor routes take the Request
alone and look their settings up themselves: app.api.raw_route.)"""

from typing import Annotated

from fastapi import Depends, Request

from app.api.raw_route import app_settings
from app.config import Settings


async def get_app_settings(request: Request) -> Settings:
    return app_settings(request)  # async: FastAPI runs a sync dependency in its thread pool


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
