"""The one path of every tensor route: read -> decode -> plan -> compute -> present -> respond.

    exchange = Exchange.negotiate(request)            # JSON or msgpack, each way (app.api.negotiation)
    incoming = await exchange.read(request, settings) # the body, within max_body_bytes (app.api.body_limits)
    options = route.parse(incoming.decode())          # the codec (app.codec), then the route's options model
    plan = route.plan(options, settings)              # configs, shapes, limits: once (app.stacks.plan)
    outcome = route.run(plan)                         # a backend (app.stacks.run), on the compute pool
    return exchange.respond(route.present(outcome, encoding))

Where each step runs is the fast path, not another path: a small body (the notebook's Linear) is
decoded and planned on the event loop, and the plan's size picks the lane: computed right there
(no thread hand-off), or in the pool's light or heavy lane (app.compute_pool). A big body stays
bytes until a heavy-lane worker takes it, so a 60 MB JSON parse never blocks the event loop and
decoding counts against the pool.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from app import tracing
from app.api.body_limits import wait_for_disconnect
from app.api.negotiation import Exchange
from app.api.raw_route import app_settings, compute_pool
from app.codec.tensors import Encoding
from app.config import Settings
from app.errors import validation_error
from app.observability import access_fields

Options = TypeVar("Options", bound=BaseModel)
Planned = TypeVar("Planned")
Outcome = TypeVar("Outcome")

LIGHT_BODY_BYTES = 64 * 1024
"""Bodies up to this size are decoded and planned on the event loop, to size the request."""
LOGGED_OPTIONS = ("backend", "device", "compare")
"""Request options that go into the access line (app.observability)."""


@dataclass(frozen=True)
class TensorRoute(Generic[Options, Planned, Outcome]):
    """What a route adds to the path: its options model and its plan, run and present steps."""

    name: str
    """The access line's `kind`: a layer kind, `sequential`, `shapes`."""
    options: type[Options]
    plan: Callable[[Options, Settings], Planned]
    run: Callable[[Planned], Outcome]
    present: Callable[[Outcome, Encoding], Any]
    """(outcome, tensor encoding) -> the response body (what the exchange's `respond` writes)."""
    size: Callable[[Planned], int]
    """What picks the lane (see app.config's light_request_size and inline_request_size)."""
    record: Callable[[Outcome], None] | None = None
    """Metrics of the computation (app.observability)."""
    negotiate: Callable[[Request], Any] = Exchange.negotiate
    """The request -> its exchange (read, tensor_encoding, respond): JSON or msgpack by default; the
    Open Inference Protocol's JSON header with binary tensors on /v2 (app.api.routes.v2)."""

    def parse(self, body: dict[str, Any]) -> Options:
        try:
            return self.options.model_validate(body)
        except ValidationError as exc:
            raise validation_error(exc) from None


async def serve(route: TensorRoute[Any, Any, Any], request: Request) -> Response:
    """A tensor request from its bytes to its response, each step once."""
    settings, pool = app_settings(request), compute_pool(request)
    logged = access_fields(request)
    logged["kind"] = route.name
    exchange = route.negotiate(request)
    incoming = await exchange.read(request, settings)

    def parse() -> Any:
        options = route.parse(incoming.decode())
        logged.update({name: getattr(options, name) for name in LOGGED_OPTIONS if hasattr(options, name)})
        return options

    def decode() -> tuple[Any, Any]:
        with tracing.step("decode"):  # the body's bytes to a plan: codec, options, tensors, limits
            options = parse()
            return options, route.plan(options, settings)

    def finish(options: Any, plan: Any) -> Response:
        with tracing.step("compute"):
            outcome = route.run(plan)
        if route.record is not None:
            route.record(outcome)
        encoding = exchange.tensor_encoding(getattr(options, "encoding", "list"))
        with tracing.step("encode"):
            return exchange.respond(route.present(outcome, encoding))

    def parse_and_finish() -> Response:
        return finish(*decode())

    async def disconnected() -> None:
        await wait_for_disconnect(request)

    if incoming.size > LIGHT_BODY_BYTES:
        return await pool.run(parse_and_finish, disconnected=disconnected)
    options, plan = decode()
    size = route.size(plan)
    if size <= settings.inline_request_size:
        return finish(options, plan)  # tiny (the notebook's Linear: ~100 us): no thread hand-off, no queue
    return await pool.run(finish, options, plan, disconnected=disconnected, light=size <= settings.light_request_size)
