"""The emulated Kubernetes cluster used by tests, the demo and the benchmark (never by the operator itself).

- :mod:`modeldeploy.sim.emulator`: :class:`ClusterEmulator`, API server semantics over kmock.
- :mod:`modeldeploy.sim.resources`: resource registry, :func:`standard_resources`, :func:`install_crd`.
- :mod:`modeldeploy.sim.controllers`: simulated Deployment/Pod controller with pluggable pod behaviours.
- :mod:`modeldeploy.sim.cluster`: :func:`run_cluster`, serving all of it on a loopback port with a kubeconfig.
- :mod:`modeldeploy.sim.kubelet`: :class:`SimKubelet`, running each pod's ``modelserve`` container as a process.
- :mod:`modeldeploy.sim.proxy`: the data plane. :class:`ServiceProxy` routes like kube-proxy (round robin over
  the Service's ready endpoints, so traffic follows the replica ratio); :class:`RouteProxy` routes like a
  Gateway with one HTTPRoute attached (first the matching rule, then a backendRef by ``weight``, then a ready
  endpoint of that Service; 404 when no rule matches, 500 for the share of an invalid backendRef, 503 for a
  backend without ready endpoints). Both re-read the objects on every request.
- :mod:`modeldeploy.sim.httproute`: the HTTPRoute rules the RouteProxy follows (matches, precedence, smooth
  weighted round robin or seeded random picks), pure.
- :mod:`modeldeploy.sim.scenarios`: :class:`LocalHarness` (``harness.proxy()``, ``harness.route_proxy()``)
  and the progressive-delivery scenarios run by ``make e2e-local``.
"""
