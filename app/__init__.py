"""layerlab: neural-network layers computed on demand over HTTP."""

__version__ = "0.1.0"
