"""The library version (a leaf module: the loop records it in every run folder)."""

__version__ = "0.1.0"
