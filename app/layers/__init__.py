"""Layer families: each module declares its kinds (config schema, shapes, reference adapter).

`registry.LAYERS` collects them; `service` validates a request and runs it on a backend.
"""
