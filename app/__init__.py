"""layerlab: neural-network layers computed on demand over HTTP.

How a request flows
-------------------
Every tensor route (POST /v1/layers/{kind}, /v1/sequential, /v1/shapes, /v2/models/{kind}/infer)
takes one path, `app.api.endpoint.serve`; a single layer is a stack of one. Before it, plain ASGI
layers (app.main.LayerlabAPI): app.observability (request id, metrics, access line), CORS and API
keys (app.api.security) when configured, then app.api.raw_route.TensorDispatch straight to the route
(other routes go through FastAPI's router).

    read     app.serve.HttpProtocol  a big body with a Content-Length lands in one buffer, no copies
             app.api.body_limits     the body, within LAYERLAB_MAX_BODY_BYTES (413 past it)
    decode   app.api.negotiation     JSON or msgpack, from Content-Type and Accept
             app.codec               bytes -> Python values: JSON (orjson + guards), msgpack (bins in
                                     place), the V2 protocol (app.codec.v2; shared memory: app.shared_memory)
    plan     app.stacks.plan         configs parsed, shapes, limits, size: once, before any tensor
                                     exists (a repeated config's plan is remembered)
    compute  app.compute_pool        on the event loop when tiny, else a worker of the light or heavy lane
             app.stacks.run          tensors decoded (app.codec.tensors), states resolved, each layer
                                     run, forward and (with gradients) backward
             app.backends.registry   on torch (app.backends.torch_backend) or NumPy (app.backends.reference_backend)
    present  app.api.present         outcome -> response body, tensors in the requested encoding
    respond  app.api.negotiation     JSON, or msgpack written straight from the arrays' buffers

What each layer kind is lives in app.layers (config model, output shapes, formulas: no backend
code); the backends hold their own adapters. Errors are app.errors' classes, one JSON envelope
(app.api.errors). Arrows point one way: api -> stacks -> backends -> layers, and everyone -> codec;
tests/test_import_cycles.py checks there is no cycle.
"""

__version__ = "0.1.0"
