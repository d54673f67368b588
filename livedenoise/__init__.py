"""livedenoise: real-time, acquisition-side self-supervised denoising."""

__version__ = "0.1.0"
