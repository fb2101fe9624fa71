"""The reference backend: each layer's formula written plainly in NumPy, vectorized.

One module per layer family, one short function per layer. Never imports torch.
"""
