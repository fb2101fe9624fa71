"""Named dependencies, so route signatures read like prose. (The tensor routes take the Request
alone and look their settings up themselves: app.api.raw_route.)"""

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
