"""Settings, read from `LAYERLAB_*` environment variables (see the README's table)."""

import json
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class Settings(BaseSettings):
    """Everything an operator can tune. Limits are checked before anything large is allocated."""

    model_config = SettingsConfigDict(env_prefix="LAYERLAB_", extra="ignore")

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
    log_level: LogLevel = Field("info", description="Least severe log level written.")
    access_log: bool = Field(True, description="One JSON access line per request on stdout.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed by CORS, comma-separated or a JSON list; * allows any. Empty: CORS closed.",
    )
    api_key: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="API keys, comma-separated (several for rotation). Reserved: not enforced yet.",
    )

    max_body_bytes: int = Field(
        256 * 2**20, gt=0, description="Largest request body accepted, in bytes (413 above)."
    )
    max_tensor_elements: int = Field(
        2**25, gt=0, description="Most elements in any one input or output tensor."
    )
    max_parameter_elements: int = Field(
        2**25, gt=0, description="Most trainable parameter elements in one layer or stack."
    )
    max_macs: int = Field(
        20 * 10**9, gt=0, description="Most estimated multiply-adds in one request."
    )
    max_json_depth: int = Field(
        64, gt=0, description="Deepest nesting of arrays accepted in a tensor."
    )

    compute_workers: int = Field(
        2, gt=0, description="Requests computed at once in each process; more wait in a queue."
    )
    torch_threads: int = Field(
        0, ge=0, description="torch intra-op threads per process (0: torch's default; with several "
        "workers, `python -m app.serve` shares the CPUs out among them)."
    )

    @field_validator("cors_origins", "api_key", mode="before")
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


@lru_cache
def get_settings() -> Settings:
    return Settings()
