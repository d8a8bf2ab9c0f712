"""Progressive delivery: the pure rollout state machine, replica arithmetic and traffic routers.

Nothing in this package does I/O or reads a clock: time and observations come in as arguments, and the
results are data (a ``Decision``, manifests) for the I/O layer to apply. See docs/rollouts.md.
"""
