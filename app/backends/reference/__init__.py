"""The reference backend: each layer's formula written plainly in NumPy, vectorized.

One module per layer family, one short function per layer and direction (`conv` and
`conv_backward`, ...); loss.py holds the losses a backward pass starts from. Never imports torch.
"""
