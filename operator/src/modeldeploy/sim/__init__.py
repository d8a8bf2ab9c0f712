"""The emulated Kubernetes cluster used by tests, the demo and the benchmark (never by the operator itself).

- :mod:`modeldeploy.sim.emulator`: :class:`ClusterEmulator`, API server semantics over kmock.
- :mod:`modeldeploy.sim.resources`: resource registry, :func:`standard_resources`, :func:`install_crd`.
- :mod:`modeldeploy.sim.controllers`: simulated Deployment/Pod controller with pluggable pod behaviours.
- :mod:`modeldeploy.sim.cluster`: :func:`run_cluster`, serving all of it on a loopback port with a kubeconfig.
"""
