"""Routes whose endpoint reads the request and builds the response itself.

FastAPI's request handler solves the endpoint's dependencies and may parse its body on every
request: ~170 us for a layer route, more than the notebook's Linear layer costs end to end. The
tensor routes read and parse their bodies themselves (app.api.endpoint, through the codec), so
`RawRoute` calls the endpoint with the Request and nothing else. FastAPI still reads the
endpoint's signature and the route's arguments for the OpenAPI document.
"""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from app.compute_pool import ComputePool
from app.config import Settings


class RawRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


def app_settings(request: Request) -> Settings:
    return request.app.state.settings


def compute_pool(request: Request) -> ComputePool:
    return request.app.state.compute
