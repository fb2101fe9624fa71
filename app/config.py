"""Settings, read from `LAYERLAB_*` environment variables (see the README's table)."""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an operator can tune. Limits are checked before anything large is allocated."""

    model_config = SettingsConfigDict(env_prefix="LAYERLAB_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(8000, description="Port the server listens on.")

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
        2, gt=0, description="Requests computed at once; more wait in a queue."
    )
    torch_threads: int = Field(
        0, ge=0, description="torch intra-op threads per process (0: torch's default)."
    )
    tune_allocator: bool = Field(
        True, description="Tune glibc's allocator for big tensors at start (see app/tuning.py)."
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
