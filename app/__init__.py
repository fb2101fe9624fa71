"""layerlab: neural-network layers computed on demand over HTTP.

How a request flows
-------------------
Every tensor route (POST /v1/layers/{kind}, /v1/sequential, /v1/shapes) takes one path,
`app.api.endpoint.serve`; a single layer is a stack of one:

    read     app.api.body_limits     the body, within LAYERLAB_MAX_BODY_BYTES (413 past it)
    decode   app.api.negotiation     JSON or msgpack, from Content-Type and Accept
             app.codec               bytes -> Python values: JSON (orjson + guards), msgpack (bins in place)
    plan     app.stacks.plan         configs parsed, shapes, limits, size: once, before any tensor exists
    compute  app.compute_pool        on the event loop when tiny, else a worker of the light or heavy lane
             app.stacks.run          tensors decoded (app.codec.tensors), states resolved, each layer run
             app.backends.registry   on torch (app.backends.torch_backend) or NumPy (app.backends.reference_backend)
    present  app.api.present         outcome -> response body, tensors in the requested encoding
    respond  app.api.negotiation     JSON, or msgpack written straight from the arrays' buffers

What each layer kind is lives in app.layers (config model, output shapes, formulas: no backend
code); the backends hold their own adapters. Errors are app.errors' classes, one JSON envelope
(app.api.errors). Arrows point one way: api -> stacks -> backends -> layers, and everyone -> codec;
tests/test_import_cycles.py checks there is no cycle.
"""

__version__ = "0.1.0"
