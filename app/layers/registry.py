"""Every layer kind the service computes, by URL name."""

from app.layers import batchnorm, conv, linear, pool
from app.layers.base import LayerSpec

LAYERS: dict[str, LayerSpec] = {spec.kind: spec for spec in (*linear.SPECS, *conv.SPECS, *pool.SPECS, *batchnorm.SPECS)}
