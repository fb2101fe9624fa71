"""Pydantic models of the wire contract: structure only, never per-element tensor validation."""
