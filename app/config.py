"""Settings, read from `LAYERLAB_*` environment variables (see the README's table)."""

import difflib
import json
import os
import sys
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any, Literal, NoReturn, get_args, get_origin

import annotated_types
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class Settings(BaseSettings):
    """Everything an operator can tune. Limits are checked before anything large is allocated."""

    # allow_inf_nan: a time limit of 1e999 (inf) or nan is no limit at all; every float setting is finite.
    model_config = SettingsConfigDict(env_prefix="LAYERLAB_", extra="ignore", allow_inf_nan=False)

    host: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port the server listens on.")
    workers: int = Field(1, gt=0, description="Server processes (uvicorn workers), each with its own compute pool.")
    loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="Event loop: uvloop when installed (auto), or the standard asyncio loop."
    )
    keep_alive_s: int = Field(
        5, gt=0, description="Seconds an idle keep-alive connection stays open (a proxy's must be shorter)."
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Proxies trusted for X-Forwarded-For/-Proto, comma-separated, or * (behind a load balancer).",
    )
    drain_s: float = Field(
        0.0,
        ge=0,
        description="Seconds between SIGTERM and the server's shutdown: /readyz answers 503 at once and "
        "requests are still served, so a load balancer stops routing here before connections are refused "
        "(app.lifecycle). 0: shut down at once.",
    )
    log_level: LogLevel = Field("info", description="Least severe log level written.")
    access_log: bool = Field(True, description="One JSON access line per request on stdout.")
    tracing: bool = Field(
        False,
        description="OpenTelemetry spans for each request and its steps (needs `pip install "
        "'layerlab[otel]'`; exported where the OTEL_* variables say, see app.tracing).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed by CORS, comma-separated or a JSON list; * allows any. Empty: CORS closed.",
    )
    api_key: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="API keys, comma-separated or a JSON list (several for rotation). Empty: no "
        "authentication. Set: every route but `auth_exempt_paths` needs `Authorization: Bearer <key>` "
        "or `X-API-Key: <key>` (app.api.security).",
    )
    auth_exempt_paths: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "/healthz",
            "/readyz",
            "/v2/health/live",
            "/v2/health/ready",
            "/docs",
            "/docs/oauth2-redirect",
            "/redoc",
            "/openapi.json",
            "/static/docs/*",
            "/playground",
            "/static/playground/*",
        ],
        description="Paths open without a key when keys are set: exact paths, or prefixes ending in `*` "
        "(comma-separated or JSON).",
    )

    max_body_bytes: int = Field(256 * 2**20, gt=0, description="Largest request body accepted, in bytes (413 above).")
    max_tensor_elements: int = Field(2**25, gt=0, description="Most elements in any one input or output tensor.")
    max_parameter_elements: int = Field(
        2**25, gt=0, description="Most trainable parameter elements in one layer or stack."
    )
    max_macs: int = Field(20 * 10**9, gt=0, description="Most estimated multiply-adds in one request.")
    max_json_depth: int = Field(64, gt=0, description="Deepest nesting of arrays accepted in a tensor.")

    compute_workers: int = Field(
        2, gt=0, description="Requests computed at once in each process; more wait in a queue."
    )
    torch_threads: int = Field(
        0,
        ge=0,
        description="torch intra-op threads per process (0: torch's default; with several "
        "workers, `python -m app.serve` shares the CPUs out among them).",
    )
    tune_allocator: bool = Field(
        True, description="Tune glibc's allocator for big tensors at start (see app/process_environment.py)."
    )

    # --- Overload (issue 8): lanes, queue and time limits of the compute pool (app.compute_pool). ---
    compute_light_workers: int = Field(
        1,
        ge=0,
        description="Extra compute threads kept for light requests (see light_request_size), so "
        "small requests never queue behind big ones. 0: one shared lane.",
    )
    light_request_size: int = Field(
        10**7,
        ge=0,
        description="A request is light when its parameter, input and output elements plus its "
        "estimated multiply-adds, known from the config and shapes alone, are at most this.",
    )
    inline_request_size: int = Field(
        20_000,
        ge=0,
        description="Requests this small (same measure as light_request_size) compute on the event "
        "loop itself: ~0.1 ms there costs less than the hand-off to a worker thread. 0: never.",
    )
    compute_queue_timeout_s: float = Field(
        10.0, gt=0, description="How long a request waits for a free compute worker before a 503."
    )
    compute_queue_size: int = Field(
        64, ge=0, description="Most requests waiting for a compute worker; more get a 503 at once."
    )
    compute_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Per-request compute time limit: past it the answer is a 504 (the worker "
        "thread cannot be killed; it finishes and only then frees its slot).",
    )
    retry_after_s: int = Field(1, ge=0, description="The Retry-After header (seconds) sent with a 503.")

    @field_validator("cors_origins", "api_key", "auth_exempt_paths", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """`a,b` or `["a","b"]` from the environment; lists pass through."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    def limits(self) -> dict[str, int]:
        """Every `max_*` limit in force, by setting name (for /v1/info)."""
        return {name: getattr(self, name) for name in type(self).model_fields if name.startswith("max_")}


ENV_PREFIX = "LAYERLAB_"
OTHER_VARIABLES = {
    "LAYERLAB_URL": "the SDK's base URL (app.client)",
    "LAYERLAB_PUBLIC_PORT": "docker-compose.yml's published port",
    "LAYERLAB_PROMETHEUS_PORT": "docker-compose.yml's Prometheus port",
    "LAYERLAB_LOAD_API_KEY": "the load generator's key (tests/benchmarks/load.py)",
    "LAYERLAB_SHM_TABLE_DIR": "the folder several workers share shared-memory registrations through (app.shared_memory)",
}
"""LAYERLAB_* variables that are not server settings, read by other parts of the project."""


class SettingsError(Exception):
    """A LAYERLAB_* variable the server cannot use; its message is one line naming the variable, the
    value it holds and what it needs."""


def variable_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def expected_form(field: str) -> str:
    """What a setting accepts, in words: 'an integer > 0', 'a finite number > 0', 'one of ...'."""
    info = Settings.model_fields[field]
    annotation = info.annotation
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(annotation))
    if annotation is bool:
        return "true or false (or 1/0, yes/no, on/off)"
    if get_origin(annotation) is list:
        return "a comma-separated list or a JSON list of strings"
    bounds = [
        f"{sign} {getattr(item, attribute)}"
        for item in info.metadata
        for kind, attribute, sign in _BOUNDS
        if isinstance(item, kind)
    ]
    noun = "an integer" if annotation is int else "a finite number" if annotation is float else "a string"
    return " ".join([noun, " and ".join(bounds)]).strip()


_BOUNDS = (
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.Le, "le", "<="),
)


def describe(exc: ValidationError, environ: Mapping[str, str]) -> str:
    """One line for every bad variable: `LAYERLAB_MAX_BODY_BYTES='abc': expected an integer > 0`."""
    values = {name.upper(): value for name, value in environ.items()}
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        if field not in Settings.model_fields:
            problems.append(error["msg"])
            continue
        name = variable_name(field)
        value = values.get(name, error.get("input"))
        shown = "(hidden)" if "SecretStr" in str(Settings.model_fields[field].annotation) else repr(str(value)[:100])
        problems.append(f"{name}={shown}: expected {expected_form(field)}")
    return "invalid setting: " + "; ".join(problems)


def load_settings() -> Settings:
    """Settings from the environment; a bad value raises SettingsError with a one-line message."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe(exc, os.environ)) from None


def unknown_variables(environ: Mapping[str, str] = os.environ) -> list[str]:
    """A warning line for each LAYERLAB_* variable that is neither a setting nor one of
    OTHER_VARIABLES (a misspelling is otherwise silently ignored), naming the closest setting."""
    known = [variable_name(field) for field in Settings.model_fields]
    lines = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper in OTHER_VARIABLES:
            continue
        # Compared without the prefix, which every name shares and would make any two look alike.
        close = difflib.get_close_matches(
            upper.removeprefix(ENV_PREFIX), [k.removeprefix(ENV_PREFIX) for k in known], n=1, cutoff=0.6
        )
        hint = f"did you mean {ENV_PREFIX}{close[0]}?" if close else "no setting has a similar name"
        lines.append(f"{name} is not a layerlab setting and is ignored; {hint}")
    return lines


def exit_for(exc: SettingsError) -> NoReturn:
    """End the process over a bad setting: its one line on stderr, status 2 (a usage error), no traceback."""
    print(f"layerlab: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(2)


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings()
