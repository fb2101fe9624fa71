"""HTTP layer: reading bodies, content negotiation, the one tensor endpoint, presenting, thin routes."""
