"""Bodies of the operations routes: readiness and service information."""

from typing import Literal

from pydantic import BaseModel, Field


class Readiness(BaseModel):
    status: Literal["ready", "not ready"] = Field(examples=["ready"])
    checks: dict[str, str] = Field(
        description="One tiny Linear per backend and torch device: `ok`, or what went wrong.",
        examples=[{"reference": "ok", "torch:cpu": "ok"}],
    )
    elapsed_ms: float = Field(description="Time the checks took.")


class Device(BaseModel):
    device: str = Field(description="The name a request's `device` takes.", examples=["cpu", "cuda:0"])
    threads: int | None = Field(None, description="torch intra-op threads (CPU).")
    name: str | None = Field(None, description="The GPU's model.")
    memory_bytes: int | None = Field(None, description="The GPU's memory.")


class Info(BaseModel):
    name: str = Field(examples=["layerlab"])
    version: str = Field(description="The service's version.", examples=["0.1.0"])
    versions: dict[str, str] = Field(
        description="Versions of what computes: python, torch, numpy.",
        examples=[{"python": "3.11.7", "torch": "2.13.0+cpu", "numpy": "2.4.6"}],
    )
    devices: list[Device] = Field(description="Devices the torch backend can use (`device` in a request).")
    backends: list[str] = Field(examples=[["torch", "reference"]])
    layers: list[str] = Field(description="Layer kinds: POST /v1/layers/{kind}.")
    limits: dict[str, int] = Field(description="Every limit in force, by setting name (LAYERLAB_ + upper case).")
    workers: int = Field(description="Server processes.")
    compute_workers: int = Field(description="Requests computed at once in each process.")
