"""stillmotion: one still image and a sentence in, a short video out, on the GPU you have."""

__version__ = "0.1.0"
