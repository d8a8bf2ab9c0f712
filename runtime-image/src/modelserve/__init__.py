"""modelserve: a PyTorch inference server speaking the Open Inference Protocol v2 and TF-Serving-style v1."""

__version__ = "0.1.0"
