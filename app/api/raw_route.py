"""Routes whose endpoint reads the request and builds the response itself, and their one dispatch.

FastAPI's request handler solves the endpoint's dependencies and may parse its body on every
request: ~170 us for a layer route, more than the notebook's Linear layer costs end to end. The
tensor routes read and parse their bodies themselves (app.api.endpoint, through the codec), so
`RawRoute` calls the endpoint with the Request and nothing else. FastAPI still reads the
endpoint's signature and the route's arguments for the OpenAPI document.

`TensorDispatch` goes one step further: a request for a tensor route goes from the plain-ASGI
middleware (app.main) straight to its endpoint, one dict lookup, instead of through Starlette's
error and exception middleware, FastAPI's exit stacks and the router's walk over every route
(measured in-process on a loaded 2-core machine: ~70 us of server CPU per notebook Linear
request, about a fifth of it). Errors get the app's own exception handlers, as they would
from Starlette; every other request, and a tensor path with another method (a 405), goes the
usual way.
"""

import inspect
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.compute_pool import ComputePool
from app.config import Settings


class RawRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


def app_settings(request: Request) -> Settings:
    return request.app.state.settings


def compute_pool(request: Request) -> ComputePool:
    return request.app.state.compute


class TensorDispatch:
    """ASGI app: the tensor routes (`RawRoute`s) by path, straight to their endpoints; the rest to `other`.

    Paths without parameters (/v1/layers/linear) are found in a dict; those with parameters
    (/v2/models/{model_name}/infer) are matched as Starlette matches them, only when the path
    starts with one of their fixed prefixes.
    """

    def __init__(self, app: FastAPI, routes: Iterable[BaseRoute], other: ASGIApp) -> None:
        self.app, self.other = app, other
        raw = [route for route in routes if isinstance(route, RawRoute) and route.methods == {"POST"}]
        self.exact = {route.path: route for route in raw if not route.param_convertors}
        self.templated = [route for route in raw if route.param_convertors]
        self.prefixes = tuple(route.path.split("{", 1)[0] for route in self.templated)
        handlers = dict(app.exception_handlers)
        self.unexpected = handlers.pop(Exception, None) or handlers.pop(500, None)
        self.handlers = {key: handler for key, handler in handlers.items() if isinstance(key, type)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.match(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            await self.other(scope, receive, send)
            return
        scope["app"] = self.app
        scope["route"], scope["endpoint"] = route, route.endpoint
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            await self.answer_error(request, exc, send)
            return
        await response(scope, receive, send)

    def match(self, scope: Scope) -> RawRoute | None:
        if scope.get("root_path"):  # mounted under a prefix: Starlette's routing knows how
            return None
        path = scope["path"]
        route = self.exact.get(path)
        if route is not None or not path.startswith(self.prefixes):
            return route
        for candidate in self.templated:
            match, child_scope = candidate.matches(scope)
            if match is Match.FULL:
                scope.update(child_scope)
                return candidate
        return None

    async def answer_error(self, request: Request, exc: Exception, send: Send) -> None:
        """What Starlette's exception middleware answers (the app's handler for the exception's
        class); for an unexpected error, what its error middleware does: the 500, then re-raise
        (the server logs the traceback)."""
        handler = next((self.handlers[cls] for cls in type(exc).__mro__ if cls in self.handlers), None)
        if handler is None and self.unexpected is None:
            raise exc
        response = (handler or self.unexpected)(request, exc)
        if inspect.isawaitable(response):
            response = await response
        await response(request.scope, request.receive, send)
        if handler is None:
            raise exc
