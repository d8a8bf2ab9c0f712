"""Analysis of a new revision: criteria on the runtime's metrics, and where the metrics come from.

``criteria`` and ``promparse`` are pure; ``sources`` is the only module that does network I/O (to the pods'
/metrics endpoints or to Prometheus, never to the API server).
"""
