"""Build the runtime image from its Dockerfile without a Docker engine, then run it as the operator's pod runs it.

`make image-check` (root, Linux). buildah builds `runtime-image/Dockerfile` unchanged; podman runs the result:
1. the init container and the server container of the Deployment that `modeldeploy render` prints for a
   ModelDeployment whose model is downloaded over HTTP (with its sha256), each with that container's command,
   arguments, environment, user, read-only root filesystem, dropped capabilities and no privilege escalation, and
   the pod's volumes (the model volume read-only in the server, an empty /tmp);
2. the image with its own entrypoint (tini) and default command, as `docker run` starts it.
Each must answer Open Inference Protocol v2 and v1 requests with what the model computes here, run as uid 1000,
be unable to write outside its volumes, and exit 0 on SIGTERM after draining.

The Dockerfile's base image is a `python:3.11-slim` image from Docker Hub, which a machine without registry access
cannot pull. The check builds a stand-in with the same contract (Debian bookworm, CPython 3.11, `python` and `pip`
on PATH, pip allowed to install) from Debian's packages with debootstrap, and passes it as BASE_IMAGE. torch comes
from pip's configured find-links (`/opt/wheels` holds a CPU build of the pinned release on some machines) or,
without one, from PyPI (the CUDA build, several GB).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import http.server
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from modelserve.testing import build_torchscript, free_socket, stalling_http_server

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".build" / "image-check"
BASE_TAG = "localhost/modelserve-check-base:3.11-bookworm"
IMAGE_TAG = "localhost/modelserve:check"
TOOLS = {"buildah": "buildah", "podman": "podman", "runc": "runc", "debootstrap": "debootstrap"}
# runc and plain cgroupfs: crun refuses hybrid cgroup hierarchies, which nested VMs and CI runners often have.
PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")
PREFIX = "modelserve-check-"


def log(message: str) -> None:
    print(f"image-check: {message}", flush=True)


def run(*argv: str, check: bool = True, capture: bool = False, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    log("$ " + " ".join(argv))
    return subprocess.run(argv, check=check, text=True, capture_output=capture, **kwargs)


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        run("apt-get", "update", "-qq")
        run("apt-get", "install", "-y", "-qq", *missing, "uidmap", stdout=subprocess.DEVNULL)


def pip_find_links() -> str | None:
    """pip's configured find-links directory, when it holds a torch wheel."""
    found = (
        os.environ.get("PIP_FIND_LINKS")
        or subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.find-links"], capture_output=True, text=True
        ).stdout.strip()
    )
    return found if found and Path(found).is_dir() and list(Path(found).glob("torch-*.whl")) else None


def build_base() -> None:
    """A stand-in for python:3.11-slim-bookworm: Debian bookworm with CPython 3.11, `python` and `pip` on PATH."""
    if run(*PODMAN, "image", "exists", BASE_TAG, check=False).returncode == 0:
        log(f"base image {BASE_TAG} exists; `podman rmi {BASE_TAG}` rebuilds it")
        return
    rootfs = WORK / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    run(
        "debootstrap", "--variant=minbase", "--include=python3,python3-venv,python3-dev,ca-certificates",
        "bookworm", str(rootfs), "http://deb.debian.org/debian", stdout=subprocess.DEVNULL,
    )  # fmt: skip
    # This machine's TLS-intercepting egress, if any: its CA certificates, so that pip reaches PyPI in the build.
    for crt in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copy(crt, rootfs / "usr/local/share/ca-certificates" / crt.name)
    (rootfs / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    # A virtual environment at /usr/local puts python and pip where the official image has them.
    run("chroot", str(rootfs), "/bin/sh", "-c", "update-ca-certificates >/dev/null && python3 -m venv /usr/local")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-cf", "-", "."], stdout=subprocess.PIPE)
    run(
        *PODMAN, "import", "--change", "ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', "-", BASE_TAG,
        stdin=tar.stdout, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    if tar.wait() != 0:
        raise SystemExit("image-check: packing the base image's root filesystem failed")
    shutil.rmtree(rootfs)


def build_image(pypi_torch: bool) -> float:
    argv = ["buildah", "bud", "--isolation", "chroot", "--pull=never", "--build-arg", f"BASE_IMAGE={BASE_TAG}"]
    links = None if pypi_torch else pip_find_links()
    if links:
        argv += ["--build-arg", f"PIP_FIND_LINKS={links}", "--volume", f"{links}:{links}:ro"]
    else:
        log("no local torch wheel: the build downloads torch from PyPI (several GB)")
    started = time.monotonic()
    run(*argv, "-t", IMAGE_TAG, str(ROOT / "runtime-image"))
    return time.monotonic() - started


def _ulimits() -> list[str]:
    """This process's open-files limit and a modest process limit: podman's defaults are higher than an unprivileged
    (CAP_SYS_RESOURCE-less) host lets it set; the kubelet sets neither."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return ["--ulimit", f"nofile={soft}:{hard}", "--ulimit", "nproc=4096:4096"]


ULIMITS = _ulimits()


def free_port() -> int:
    with free_socket() as sock:
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def http_server(directory: Path) -> Iterator[int]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()


def render_pod(model_url: str, digest: str, port: int) -> dict[str, Any]:
    spec = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "demo", "namespace": "default"},
        "spec": {
            "model": {"version": "1", "storageUri": model_url, "format": "TorchScript", "sha256": digest},
            "runtime": {"port": port, "drainSeconds": 2},
            "replicas": 1,
        },
    }
    return render(spec)


def render(spec: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of the Deployment that `modeldeploy render` prints for one ModelDeployment."""
    rendered = run(
        str(Path(sys.executable).with_name("modeldeploy")), "render", "-f", "-", "-o", "json",
        input=yaml.safe_dump(spec), capture=True,
    )  # fmt: skip
    doc = json.loads(rendered.stdout)
    objects = doc.get("items", [doc])
    (deployment,) = (o for o in objects if o["kind"] == "Deployment")
    return dict(deployment["spec"]["template"]["spec"])


def podman_flags(
    pod: dict[str, Any],
    container: dict[str, Any],
    volumes: dict[str, Path],
    secrets: dict[str, dict[str, str]] | None = None,
) -> list[str]:
    """`podman run` flags for one container of a pod spec: what the kubelet would set up for it."""
    ctx = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    # The kubelet ignores the image's VOLUME declarations: its paths stay part of the (read-only) root filesystem.
    flags = [*ULIMITS, "--image-volume", "ignore", "--network", "host"]
    flags += ["--user", f"{ctx['runAsUser']}:{ctx['runAsGroup']}"]
    if "fsGroup" in pod.get("securityContext", {}):
        flags += ["--group-add", str(pod["securityContext"]["fsGroup"])]
    if ctx.get("readOnlyRootFilesystem"):
        flags += ["--read-only", "--read-only-tmpfs=false"]
    for cap in ctx.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", cap]
    if ctx.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    by_name = {v["name"]: v for v in pod["volumes"]}
    for mount in container.get("volumeMounts", []):
        read_only = bool(mount.get("readOnly"))
        if "emptyDir" in by_name[mount["name"]] and mount["mountPath"] == "/tmp":
            flags += ["--mount", "type=tmpfs,destination=/tmp,tmpfs-mode=1777" + (",ro" if read_only else "")]
        else:
            flags += ["--volume", f"{volumes[mount['name']]}:{mount['mountPath']}" + (":ro" if read_only else "")]
    for source in container.get("envFrom", []):
        for key, value in (secrets or {})[source["secretRef"]["name"]].items():
            flags += ["--env", f"{key}={value}"]
    for item in container.get("env", []):
        flags += ["--env", f"{item['name']}={item['value']}"]
    if container.get("command"):
        flags += ["--entrypoint", json.dumps(container["command"])]
    return flags


def wait_ready(base: str, cid: str, timeout: float = 180.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + "/v2/health/ready", timeout=2).status_code == 200:
                return time.monotonic() - started
        state = run(*PODMAN, "inspect", cid, "--format", "{{.State.Running}}", capture=True, check=False)
        if state.stdout.strip() != "true":
            run(*PODMAN, "logs", cid, check=False)
            raise SystemExit(f"image-check: container {cid[:12]} exited before it was ready")
        time.sleep(0.5)
    run(*PODMAN, "logs", cid, check=False)
    raise SystemExit("image-check: the server was not ready in time")


def check_answers(
    base: str, x: np.ndarray, expected: np.ndarray, model: str = "demo", input_name: str = "input"
) -> None:
    tensor = {"name": input_name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    v2 = httpx.post(f"{base}/v2/models/{model}/infer", json={"inputs": [tensor]}, timeout=30)
    assert v2.status_code == 200, v2.text
    out = np.asarray(v2.json()["outputs"][0]["data"], dtype=np.float32).reshape(expected.shape)
    assert np.allclose(out, expected, rtol=1e-5, atol=1e-6), (out, expected)
    v1 = httpx.post(f"{base}/v1/models/{model}:predict", json={"instances": x.tolist()}, timeout=30)
    assert v1.status_code == 200, v1.text
    assert np.allclose(np.asarray(v1.json()["predictions"], dtype=np.float32), expected, rtol=1e-5, atol=1e-6)
    bad = httpx.post(f"{base}/v2/models/{model}/infer", content=b"{not json", timeout=30)
    assert bad.status_code == 400 and "error" in bad.json(), bad.text


def check_container(cid: str, pid1: str) -> None:
    """uid 1000, nothing writable outside the volumes, and the expected PID 1."""
    uid = run(*PODMAN, "exec", cid, "id", "-u", capture=True).stdout.strip()
    assert uid == "1000", uid
    for path in ("/opt/modelserve/x", "/models/x", "/x"):
        denied = run(*PODMAN, "exec", cid, "touch", path, check=False, capture=True)
        assert denied.returncode != 0, f"{path} is writable"
    run(*PODMAN, "exec", cid, "touch", "/tmp/x")
    cmdline = run(*PODMAN, "exec", cid, "cat", "/proc/1/cmdline", capture=True).stdout.replace("\0", " ")
    assert pid1 in cmdline, cmdline
    log(f"uid {uid}; root filesystem and model volume read-only; PID 1: {cmdline.strip()}")


def start(name: str, *argv: str) -> str:
    """`podman run -d` of the image: the container's id."""
    return run(*PODMAN, "run", "-d", "--name", PREFIX + name, *argv, capture=True).stdout.strip()


def check_server(cid: str, port: int, x: np.ndarray, expected: np.ndarray, pid1: str, **model: str) -> str:
    """A started server container: ready, answers as the model does (check_answers, `model` its name and input),
    runs as uid 1000 with `pid1` as PID 1 and nothing writable outside /tmp, and on SIGTERM drains and exits 0.
    Removes the container; returns what it showed."""
    base = f"http://127.0.0.1:{port}"
    ready = wait_ready(base, cid)
    check_answers(base, x, expected, **model)
    check_container(cid, pid1)
    code, took, logs = stop(cid)
    assert code == 0 and "Draining" in logs, (code, logs[-2000:])
    run(*PODMAN, "rm", cid, stdout=subprocess.DEVNULL)
    return (
        f"ready in {ready:.1f} s, v2 and v1 answers equal the model's, 400 for bad JSON, uid 1000, read-only outside "
        f"/tmp, PID 1 `{pid1}`, SIGTERM -> drained and exit {code} in {took:.1f} s"
    )


def stop(cid: str) -> tuple[int, float, str]:
    started = time.monotonic()
    run(*PODMAN, "stop", "-t", "60", cid, stdout=subprocess.DEVNULL)
    took = time.monotonic() - started
    code = int(run(*PODMAN, "inspect", cid, "--format", "{{.State.ExitCode}}", capture=True).stdout.strip())
    logs = run(*PODMAN, "logs", cid, capture=True, check=False)
    return code, took, logs.stdout + logs.stderr


def check_safetensors_example(work: Path) -> str:
    """examples/safetensors-model.yaml as it is, its model directory (examples/models/tabular/ and weights made here)
    in an S3 test server (moto) that the pod's fetch reaches with the credentials of its Secret: the init container
    fetches the prefix, and the server imports the entry point from the model directory and answers."""
    import boto3
    import torch
    from moto.server import ThreadedMotoServer
    from safetensors.torch import save_file

    source = ROOT / "examples" / "models" / "tabular"
    namespace: dict[str, Any] = {}
    exec((source / "tabular_net.py").read_text(encoding="utf-8"), namespace)
    init = json.loads((source / "modelserve.json").read_text(encoding="utf-8"))["init"]
    torch.manual_seed(0)
    net = namespace["TabularMLP"](**init).eval()
    save_file(net.state_dict(), str(work / "model.safetensors"))
    x = np.random.default_rng(1).standard_normal((4, init["in_features"])).astype(np.float32)
    with torch.inference_mode():
        expected = net(torch.from_numpy(x)).numpy()

    (doc,) = [d for d in yaml.safe_load_all((ROOT / "examples" / "safetensors-model.yaml").read_text()) if d]
    bucket, _, prefix = doc["spec"]["model"]["storageUri"].removeprefix("s3://").partition("/")
    s3_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    moto.start()
    try:
        creds = {"AWS_ACCESS_KEY_ID": "check", "AWS_SECRET_ACCESS_KEY": "check", "AWS_DEFAULT_REGION": "us-east-1"}
        endpoint = f"http://127.0.0.1:{s3_port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="check",
                          aws_secret_access_key="check")  # fmt: skip
        s3.create_bucket(Bucket=bucket)
        for path in [source / "tabular_net.py", source / "modelserve.json", work / "model.safetensors"]:
            s3.upload_file(str(path), bucket, prefix + path.name)
        port = free_port()
        doc["spec"]["runtime"]["port"] = port
        pod = render(doc)
        secret = doc["spec"]["model"]["storageSecretRef"]["name"]
        secrets = {secret: {**creds, "AWS_ENDPOINT_URL": endpoint}}
        store = work / "tabular-store"
        store.mkdir()
        os.chown(store, 1000, 1000)
        (fetch,) = pod["initContainers"]
        (server,) = pod["containers"]
        flags = podman_flags(pod, fetch, {"model-store": store}, secrets)
        run(*PODMAN, "run", "--rm", "--name", PREFIX + "tabular-fetch", *flags, IMAGE_TAG, *fetch["args"])
    finally:
        moto.stop()
    fetched = sorted(p.name for p in store.iterdir())
    assert fetched == ["model.safetensors", "modelserve.json", "tabular_net.py"], fetched
    cid = start("tabular", *podman_flags(pod, server, {"model-store": store}), IMAGE_TAG, *server["args"])
    shown = check_server(cid, port, x, expected, "modelserve serve", model=doc["spec"]["model"]["name"],
                         input_name="features")  # fmt: skip
    return (
        f"examples/safetensors-model.yaml: fetched s3://{bucket}/{prefix} {fetched} with its Secret's credentials; "
        f"entry point {doc['spec']['model']['entryPoint']} imported from the model directory; {shown}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-build", action="store_true", help=f"run the existing {IMAGE_TAG}")
    parser.add_argument(
        "--pypi-torch", action="store_true", help="torch from PyPI (its CUDA build, as the image ships) even where "
        "pip's find-links hold a wheel of it",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("image-check: needs root (debootstrap, buildah and podman without a user namespace setup)")
    import torch  # the host's torch computes the expected answers

    ensure_tools()
    results: list[str] = []
    if not args.no_build:
        build_base()
        results.append(f"built {IMAGE_TAG} from runtime-image/Dockerfile in {build_image(args.pypi_torch):.0f} s")
    size = run(*PODMAN, "image", "inspect", IMAGE_TAG, "--format", "{{.Size}}", capture=True).stdout.strip()
    versions = run(
        *PODMAN, "run", "--rm", *ULIMITS, "--network", "none", "--entrypoint", "python", IMAGE_TAG, "-c",
        "import torch; print(torch.__version__, torch.version.cuda)", capture=True,
    ).stdout.split()  # fmt: skip
    results.append(f"torch {versions[0]} (CUDA {versions[1]}) in the image; image size {int(size) / 1e9:.2f} GB")
    for old in run(*PODMAN, "ps", "-aq", "--filter", f"name={PREFIX}", capture=True).stdout.split():
        run(*PODMAN, "rm", "-f", old, stdout=subprocess.DEVNULL)

    with tempfile.TemporaryDirectory(prefix="image-check-") as tmp:
        work = Path(tmp)
        model = build_torchscript(work / "source", 16, 32, 4)
        digest = hashlib.sha256(model.read_bytes()).hexdigest()
        x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
        with torch.inference_mode():
            expected = torch.jit.load(str(model))(torch.from_numpy(x)).numpy()  # type: ignore[no-untyped-call]
        store = work / "model-store"
        store.mkdir()
        os.chown(store, 1000, 1000)  # an emptyDir with the pod's fsGroup
        port = free_port()
        with http_server(model.parent) as http_port:
            pod = render_pod(f"http://127.0.0.1:{http_port}/{model.name}", digest, port)
            volumes = {"model-store": store}
            (fetch,) = pod["initContainers"]
            (server,) = pod["containers"]
            run(*PODMAN, "run", "--rm", "--name", PREFIX + "fetch", *podman_flags(pod, fetch, volumes), IMAGE_TAG,
                *fetch["args"])  # fmt: skip
            fetched = sorted(p.name for p in store.iterdir())
            assert fetched == [model.name], fetched
            results.append(f"pod init container: `{' '.join(fetch['command'] + fetch['args'])}` fetched {fetched}")

            # The init container stopped mid-download (the pod deleted): as PID 1 it must stop at once, exit 143 and
            # leave no partial file, not wait for SIGKILL at the end of the grace period.
            stalled = work / "model-store-stalled"
            stalled.mkdir()
            os.chown(stalled, 1000, 1000)
        with stalling_http_server() as stalling:
            fetch_args = [*fetch["args"]]
            fetch_args[1] = f"{stalling}/{model.name}"
            cid = start("fetch-stop", *podman_flags(pod, fetch, {"model-store": stalled}), IMAGE_TAG, *fetch_args)
            deadline = time.monotonic() + 60
            while not list(stalled.glob(".*.partial")):
                assert time.monotonic() < deadline, "the stalled download never started"
                time.sleep(0.1)
            code, took, logs = stop(cid)
            assert code == 143 and "Fetch stopped by SIGTERM" in logs, (code, logs[-2000:])
            assert list(stalled.iterdir()) == [], list(stalled.iterdir())
            results.append(
                f"pod init container stopped mid-download: exit {code} in {took:.1f} s, no partial file left"
            )
            run(*PODMAN, "rm", cid, stdout=subprocess.DEVNULL)

        cid = start("server", *podman_flags(pod, server, volumes), IMAGE_TAG, *server["args"])
        results.append(f"pod server container: {check_server(cid, port, x, expected, 'modelserve serve')}")

        # The image as `docker run` starts it: its entrypoint (tini) and default command, settings from the env.
        port = free_port()
        cid = start(
            "entrypoint", *ULIMITS, "--network", "host", "--read-only", "--read-only-tmpfs=false",
            "--mount", "type=tmpfs,destination=/tmp,tmpfs-mode=1777", "--volume", f"{store}:/models:ro",
            "--env", "MODELSERVE_MODEL_NAME=demo", "--env", f"MODELSERVE_PORT={port}",
            "--env", "MODELSERVE_DRAIN_SECONDS=1", IMAGE_TAG,
        )  # fmt: skip
        results.append(f"image entrypoint: {check_server(cid, port, x, expected, '/usr/bin/tini -- modelserve serve')}")

        results.append(check_safetensors_example(work))

    print("\n".join(["", "image-check passed:", *(f"  - {line}" for line in results)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
