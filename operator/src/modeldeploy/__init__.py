"""modeldeploy: a Kubernetes operator that serves PyTorch models described by a ModelDeployment resource."""

__version__ = "0.1.0"
