"""Compute backends behind one small interface (`app.backends.base.Backend`).

This package's `__init__` imports nothing, so `app.backends.reference` loads without torch.
"""
