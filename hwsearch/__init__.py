"""hwsearch: hardware-aware compression search (structured pruning + int8/fp16) for PyTorch models."""

__version__ = "0.1.0"
