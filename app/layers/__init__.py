"""Layer families: each module declares its kinds (config schema, output shapes, formulas, work).

`registry.LAYERS` collects them. No backend code here: each backend holds its own adapters
(app.backends.torch_backend, app.backends.reference_backend), and app.stacks plans and runs them.
"""
