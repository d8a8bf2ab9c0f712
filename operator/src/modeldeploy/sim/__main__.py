"""Serve the emulated cluster standalone: ``python -m modeldeploy.sim --port 8001 --kubeconfig FILE``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from modeldeploy.sim.cluster import run_cluster
from modeldeploy.sim.resources import load_crd


def _default_crds() -> list[Path]:
    """CRDs shipped with the package (``modeldeploy/crds``), else ``crds/`` of the working directory."""
    package_crds = Path(__file__).resolve().parent.parent / "crds"
    for folder in (package_crds, Path.cwd() / "crds"):
        found = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
        if found:
            return found
    return []


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modeldeploy.sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on (0: any free port)")
    parser.add_argument("--kubeconfig", type=Path, required=True, help="where to write the kubeconfig file")
    parser.add_argument(
        "--crd",
        type=Path,
        action="append",
        default=None,
        help="CRD manifest to install (repeatable; default: the package's crds/ or ./crds/*.yaml)",
    )
    parser.add_argument("--ready-delay", type=float, default=0.5, help="seconds until simulated pods are Ready")
    parser.add_argument("--verbose", action="store_true")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    crds = args.crd if args.crd is not None else _default_crds()
    manifests = [load_crd(path) for path in crds]
    async with run_cluster(
        crds=manifests,
        ready_delay=args.ready_delay,
        host=args.host,
        port=args.port,
        kubeconfig_path=args.kubeconfig,
    ) as cluster:
        # Signal handlers first: whoever reads the line below may stop us at once.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        names = ", ".join(m["metadata"]["name"] for m in manifests) or "none"
        print(
            f"Emulated cluster at {cluster.url}; kubeconfig {cluster.kubeconfig_path}; CRDs: {names}",
            flush=True,
        )
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        asyncio.run(_serve(args))
    except (OSError, ValueError) as error:
        print(f"modeldeploy.sim: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
