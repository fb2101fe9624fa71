"""A request's layers as a stack: planned once (plan.py), then run on a backend (run.py).

A single layer is a stack of one: /v1/layers/{kind}, /v1/sequential and /v1/shapes share the
plan; the first two share the run.
"""
