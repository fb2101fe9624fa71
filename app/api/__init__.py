"""HTTP layer: body parsing, dependencies and thin routes."""
