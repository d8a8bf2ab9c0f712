"""The ``modeldeploy`` command.

``modeldeploy render -f FILE`` prints the children the operator would create for the ModelDeployments in FILE,
through the same path the operator takes (defaults, schema and CEL checks, parsing, builders).

Each subcommand lives in an ``_add_<name>`` function that registers its parser and sets ``handler``; ``main``
dispatches on it. Exit status: 0 on success, 2 for invalid input or usage (``golden check``: 1 for wrong answers).

``modeldeploy golden record|check`` records golden requests from a trusted model server, or checks one.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from modeldeploy import __version__
from modeldeploy.config import OperatorConfig
from modeldeploy.policy import check_policy
from modeldeploy.reconcile import Observed, check_spec, plan_reconcile
from modeldeploy.schema import API_VERSION, KIND, SpecError, validate_object
from modeldeploy.types import Manifest

if TYPE_CHECKING:
    from modeldeploy.runner import OperatorProcess

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_FAILED = 1

Handler = Callable[[argparse.Namespace], int]


class InputError(Exception):
    """A problem with the user's input, printed as ``error: <message>``."""


@dataclass(frozen=True)
class Document:
    """One YAML document of an input file."""

    source: str
    index: int
    body: Any


def read_documents(path: str, stdin: TextIO | None = None) -> list[Document]:
    """The non-empty YAML documents of ``path`` (``-`` reads standard input); InputError when unreadable."""
    source = "<stdin>" if path == "-" else path
    try:
        text = (stdin or sys.stdin).read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"{source}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise InputError(f"{source}: not UTF-8 text") from None
    try:
        bodies = list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        raise InputError(f"{source}: invalid YAML: {error}") from None
    return [Document(source, index, body) for index, body in enumerate(bodies) if body is not None]


def _describe(doc: Document) -> str:
    body = doc.body
    if isinstance(body, dict):
        kind = body.get("kind") or "<no kind>"
        name = (body.get("metadata") or {}).get("name") if isinstance(body.get("metadata"), dict) else None
        return f"{kind}/{name or '<no name>'}"
    return f"document {doc.index + 1}"


def render_documents(
    documents: Sequence[Document], config: OperatorConfig
) -> tuple[list[Manifest], list[str]]:
    """Children of every ModelDeployment document, and one error line per invalid document."""
    objects: list[Manifest] = []
    errors: list[str] = []
    for doc in documents:
        where = f"{doc.source}: {_describe(doc)}"
        body = doc.body
        if not isinstance(body, dict):
            errors.append(f"{where}: expected a mapping, got a {type(body).__name__}")
            continue
        if body.get("apiVersion") != API_VERSION or body.get("kind") != KIND:
            errors.append(
                f"{where}: not a ModelDeployment (apiVersion {API_VERSION}, kind {KIND}); "
                f"got apiVersion {body.get('apiVersion')!r}, kind {body.get('kind')!r}"
            )
            continue
        spec_errors = validate_object(body)
        try:
            if spec_errors:
                raise spec_errors[0]
            _, parsed, _ = check_spec(body)
            violation = check_policy(parsed, config)
            if violation is not None:
                raise violation
        except SpecError as error:
            spec_errors = spec_errors or [error]
            errors.extend(f"{where}: {e}" for e in spec_errors)
            continue
        # Exactly what the operator applies for a new object: the same reconcile pass, nothing observed yet.
        fresh = {**body, "metadata": {"namespace": "default", **(body.get("metadata") or {})}}
        plan = plan_reconcile(fresh, Observed(), config, datetime.now(UTC), admitted=False)
        objects.extend(plan.apply)
    return objects, errors


def dump(objects: Sequence[Manifest], output: str) -> str:
    """A YAML stream, or a JSON ``v1/List``."""
    if output == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}, indent=2) + "\n"
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False, explicit_start=True)


# --- render ------------------------------------------------------------------------------------------------


def _add_render(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "render",
        help="print the objects the operator would create for ModelDeployments",
        description=(
            "Validate ModelDeployments as the API server would and print the children the operator creates "
            "for them, for review or for kubectl apply: a Deployment per revision, the Services, the "
            "PodDisruptionBudget, a ControllerRevision per revision (its pod template, for rollbacks), and as the "
            "spec and the operator's settings ask, the HorizontalPodAutoscaler, the HTTPRoute and the NetworkPolicy."
        ),
    )
    parser.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=True,
        metavar="FILE",
        help="YAML file with one or more ModelDeployment documents; - reads standard input (repeatable)",
    )
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="output format")
    parser.add_argument(
        "--default-runtime-image",
        metavar="IMAGE",
        help="runtime image for specs without spec.runtime.image (default: $MODELDEPLOY_RUNTIME_IMAGE or "
        "the built-in image)",
    )
    parser.set_defaults(handler=_cmd_render)


def _config(args: argparse.Namespace) -> OperatorConfig:
    config = OperatorConfig.from_env(os.environ)
    if getattr(args, "default_runtime_image", None):
        config = replace(config, default_runtime_image=args.default_runtime_image)
    return config


def _cmd_render(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
        documents = [doc for path in args.files for doc in read_documents(path)]
    except (InputError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    if not documents:
        print(f"error: {', '.join(args.files)}: no ModelDeployment documents found", file=sys.stderr)
        return EXIT_INVALID
    objects, errors = render_documents(documents, config)
    if errors:
        for line in errors:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_INVALID
    sys.stdout.write(dump(objects, args.output))
    return EXIT_OK


# --- run ---------------------------------------------------------------------------------------------------


def _env_int(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"{name} must be an integer, got {raw!r}") from None


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
"""The operator's log levels (``--log-level``, ``MODELDEPLOY_LOG_LEVEL``; the chart's ``logLevel``)."""


def peering_priority(pod_ip: str) -> int:
    """A distinct kopf peering priority per replica, from its pod IP (IPv4: the address as an integer)."""
    address = ipaddress.ip_address(pod_ip)
    if isinstance(address, ipaddress.IPv4Address):
        return int(address)
    return int(address) & 0x7FFFFFFF


def _add_run(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the operator against the cluster of the current kubeconfig context (or in-cluster)",
        description=(
            "Run the operator. Every option can also be set by an environment variable (in brackets); the "
            "Helm chart sets them. Without --namespace it watches all namespaces."
        ),
    )
    parser.add_argument(
        "-n", "--namespace", dest="namespaces", action="append", default=None, metavar="NS",
        help="namespace to watch, repeatable [MODELDEPLOY_WATCH_NAMESPACES, comma-separated]",
    )
    parser.add_argument("--health-port", type=int, default=None,
                        help="port of GET /healthz, 0 disables [MODELDEPLOY_HEALTH_PORT, default 8080]")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="port of GET /metrics, 0 disables [MODELDEPLOY_METRICS_PORT, default 9090]")
    parser.add_argument("--peering", default=None, metavar="NAME",
                        help="kopf peering object for HA; empty runs standalone [MODELDEPLOY_PEERING_NAME]")
    parser.add_argument("--resync-period", type=float, default=None, metavar="SECONDS",
                        help="re-reconcile every ModelDeployment this often [MODELDEPLOY_RESYNC_PERIOD_SECONDS, 300]")
    parser.add_argument("--peering-lifetime", type=int, default=None, metavar="SECONDS",
                        help="how long this replica's peering keep-alive stays valid: a replica that stops without "
                             "saying so is replaced after at most this [MODELDEPLOY_PEERING_LIFETIME_SECONDS, 60]")
    parser.add_argument("--log-level", default=None, choices=LOG_LEVELS, type=str.upper,
                        help="the operator's log level [MODELDEPLOY_LOG_LEVEL, INFO]")
    parser.add_argument("--verbose", action="store_true", help="debug logging, as --log-level=DEBUG")
    parser.set_defaults(handler=_cmd_run)


def run_options(args: argparse.Namespace) -> OperatorProcess:
    """The operator process options from the command line, falling back to the environment."""
    from modeldeploy.handlers import RunOptions
    from modeldeploy.runner import OperatorProcess

    namespaces = args.namespaces
    if namespaces is None:
        namespaces = [n.strip() for n in os.environ.get("MODELDEPLOY_WATCH_NAMESPACES", "").split(",") if n.strip()]
    health = args.health_port if args.health_port is not None else _env_int("MODELDEPLOY_HEALTH_PORT", 8080)
    metrics = args.metrics_port if args.metrics_port is not None else _env_int("MODELDEPLOY_METRICS_PORT", 9090)
    peering = args.peering if args.peering is not None else os.environ.get("MODELDEPLOY_PEERING_NAME", "")
    pod_ip = os.environ.get("MODELDEPLOY_POD_IP", "")
    try:
        priority = peering_priority(pod_ip) if pod_ip else 0
    except ValueError:
        raise InputError(f"MODELDEPLOY_POD_IP is not an IP address: {pod_ip!r}") from None
    period = args.resync_period
    if period is None:
        try:
            period = RunOptions.from_env(os.environ).resync_period
        except ValueError as error:
            raise InputError(str(error)) from None
    if period <= 0:
        raise InputError("the resync period must be positive")
    level = "DEBUG" if args.verbose else args.log_level or os.environ.get("MODELDEPLOY_LOG_LEVEL", "").upper() or "INFO"
    if level not in LOG_LEVELS:
        raise InputError(f"MODELDEPLOY_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    lifetime = args.peering_lifetime
    if lifetime is None:
        lifetime = _env_int("MODELDEPLOY_PEERING_LIFETIME_SECONDS", 60)
    if lifetime is None or lifetime < 10:
        raise InputError(f"the peering lifetime must be at least 10 seconds, got {lifetime!r}")
    return OperatorProcess(
        namespaces=namespaces,
        health_port=health or None,
        metrics_port=metrics or None,
        standalone=not peering,
        peering_name=peering or "modeldeploy",
        priority=priority,
        resync_period=period,
        peering_lifetime=lifetime,
        log_level=level,
    )


OPTIONAL_KOPF_CLIENTS = ("kubernetes", "kubernetes_asyncio", "pykube")
"""Client libraries kopf imports when installed, to recognise their model objects and to log in through them."""


def _without_optional_clients() -> None:
    """Keep kopf from importing the optional client libraries into the operator process.

    The operator uses none of them: it logs in through its own login handler and talks to the API server through
    ``modeldeploy.kube``. The operator image does not install them; a development environment does (the
    ``kubernetes`` package alone adds 16 MB to the process). Only before kopf is first imported, and only for
    libraries not imported yet.
    """
    if "kopf" in sys.modules:
        return
    for name in OPTIONAL_KOPF_CLIENTS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "import name" raises ImportError


def _cmd_run(args: argparse.Namespace) -> int:
    _without_optional_clients()
    try:
        OperatorConfig.from_env(os.environ)  # Fail fast, naming the variable, before connecting anywhere.
        process = run_options(args)
    except (InputError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    from modeldeploy.runner import run

    return EXIT_OK if run(process) else EXIT_FAILED


# --- demo --------------------------------------------------------------------------------------------------


def _add_demo(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the operator on examples/ against an embedded emulated cluster and show it converge",
    )
    parser.add_argument("-f", "--filename", dest="files", action="append", default=None, metavar="FILE",
                        help="ModelDeployment files to apply (default: the examples shipped with the project)")
    parser.add_argument("--no-progressive", dest="progressive", action="store_false",
                        help="skip the canary scenarios with real model servers")
    parser.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from modeldeploy.demo import run_demo

    return run_demo(args.files, progressive=args.progressive)


# --- golden ------------------------------------------------------------------------------------------------

EXIT_MISMATCH = 1


def _add_golden(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "golden",
        help="record golden requests from a model server you trust, or check a server against them",
        description=(
            "Golden requests (spec.rollout.analysis.goldenRequests) are known inputs and the answers a new "
            "version must give. `record` sends inputs to a running model server (the version you trust, e.g. "
            "`make serve` or `kubectl port-forward`) and prints the goldenRequests block with its answers; `check` "
            "sends the cases of a goldenRequests block (or of a ModelDeployment) to a server and reports each "
            "wrong answer, as the operator's analysis would judge them."
        ),
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    record = actions.add_parser("record", help="print a goldenRequests block with a trusted server's answers")
    check = actions.add_parser("check", help="send golden requests to a server and report wrong answers")
    for sub in (record, check):
        sub.add_argument("--url", required=True, help="the model server's base URL, e.g. http://localhost:8080")
        sub.add_argument("--model", required=True, help="the model name the server serves (spec.model.name)")
        sub.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
        sub.add_argument(
            "--token-file", metavar="FILE",
            help="a file holding the bearer token of a server with caller authentication (spec.runtime.auth): one "
            "of the Secret's values, e.g. from `kubectl get secret NAME -o jsonpath='{.data.KEY}' | base64 -d`",
        )  # fmt: skip
    record.add_argument(
        "-f", "--filename", dest="file", required=True, metavar="FILE",
        help="YAML or JSON: a list of cases {name, inputs: [{name, datatype, shape, data}]} (or {cases: [...]}); "
        "- reads standard input",
    )  # fmt: skip
    record.add_argument(
        "--expect", choices=("argmax", "data"), default="argmax",
        help="what each output must match: its class per row (argmax, default: classifiers, robust to numeric "
        "noise) or every value within the tolerances (data)",
    )  # fmt: skip
    record.add_argument("--absolute-tolerance", type=float, default=None, metavar="X")
    record.add_argument("--relative-tolerance", type=float, default=None, metavar="X")
    record.add_argument("--max-mismatches", type=int, default=None, metavar="N")
    record.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="output format")
    check.add_argument(
        "-f", "--filename", dest="file", required=True, metavar="FILE",
        help="a goldenRequests block (as `record` prints it) or a ModelDeployment with one; - reads standard input",
    )  # fmt: skip
    parser.set_defaults(handler=_cmd_golden)


def _caller_headers(args: argparse.Namespace) -> dict[str, str]:
    """The Authorization header of ``--token-file`` (none without it); InputError for an unreadable or bad file."""
    if not args.token_file:
        return {}
    from modeldeploy.analysis.secretdata import is_token

    try:
        token = Path(args.token_file).read_bytes().strip()
    except OSError as error:
        raise InputError(f"cannot read --token-file {args.token_file}: {error.strerror or error}") from None
    if not is_token(token):
        # The message never shows the token.
        raise InputError(f"--token-file {args.token_file}: expected one token, without spaces or control characters")
    return {"Authorization": f"Bearer {token.decode('ascii')}"}


def _post_json(url: str, body: Any, timeout: float, headers: Mapping[str, str]) -> tuple[int, Any]:
    """POST ``body`` as JSON with ``headers``; (HTTP status, decoded JSON answer). InputError when the server cannot
    be reached, refuses the caller (401, 403) or does not answer JSON."""
    import urllib.error
    import urllib.request

    from modeldeploy.analysis.golden import PROBE_HEADERS

    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **PROBE_HEADERS, **headers},  # not client traffic in its metrics
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except (urllib.error.URLError, OSError) as error:
        raise InputError(f"cannot reach {url}: {getattr(error, 'reason', error)}") from None
    try:
        answer = json.loads(raw)
    except ValueError:
        raise InputError(f"{url} answered HTTP {status} with something that is not JSON") from None
    if status in (401, 403):
        said = answer.get("error") if isinstance(answer, dict) else answer
        given = "refused the token of --token-file" if "Authorization" in headers else "needs a token (--token-file)"
        raise InputError(f"{url} {given}: HTTP {status}: {said}")
    return status, answer


def _golden_input(path: str) -> Any:
    documents = read_documents(path)
    if len(documents) != 1:
        raise InputError(f"{path}: expected one YAML or JSON document, found {len(documents)}")
    return documents[0].body


def _record_golden(args: argparse.Namespace) -> dict[str, Any]:
    from modeldeploy.analysis import golden
    from modeldeploy.rollout.config import GoldenCase, GoldenTensor, RolloutSpecError, parse_rollout

    raw = _golden_input(args.file)
    cases = raw.get("cases") if isinstance(raw, dict) else raw
    if not isinstance(cases, list) or not cases:
        raise InputError(f"{args.file}: expected a non-empty list of cases (or an object with cases)")
    url = f"{args.url.rstrip('/')}/v2/models/{args.model}/infer"
    headers = _caller_headers(args)
    block: dict[str, Any] = {}
    for key, value in (("maxMismatches", args.max_mismatches), ("absoluteTolerance", args.absolute_tolerance),
                       ("relativeTolerance", args.relative_tolerance)):  # fmt: skip
        if value is not None:
            block[key] = value
    recorded = []
    for i, case in enumerate(cases):
        if not isinstance(case, dict):
            raise InputError(f"{args.file}: case {i} is not an object")
        name = str(case.get("name") or f"case-{i + 1}")
        # The inputs go through the operator's own parsing, so what is recorded is what it will send.
        probe = {"name": name, "inputs": case.get("inputs"), "outputs": [{"name": "-", "argmax": [0]}]}
        try:
            parsed = parse_rollout({"analysis": {"goldenRequests": {"cases": [probe]}}}).analysis
        except RolloutSpecError as error:
            raise InputError(f"{args.file}: case {name!r}: {error.message} ({error.field_path})") from None
        assert parsed is not None and parsed.golden is not None
        inputs: tuple[GoldenTensor, ...] = parsed.golden.cases[0].inputs
        status, answer = _post_json(url, golden.request_body(GoldenCase(name, inputs, ())), args.timeout, headers)
        if status != 200:
            said = answer.get("error") if isinstance(answer, dict) else answer
            raise InputError(f"case {name!r}: {url} answered HTTP {status}: {said}")
        outputs = []
        answered = answer.get("outputs") if isinstance(answer, dict) else None
        for out in answered if isinstance(answered, list) else []:
            data = golden.flat_numbers(out.get("data")) if isinstance(out, dict) else None
            if data is None:
                raise InputError(f"case {name!r}: output {out.get('name') if isinstance(out, dict) else out!r} "
                                 "is not numeric data")  # fmt: skip
            if args.expect == "argmax":
                classes = golden.argmax_rows(data, out.get("shape"))
                if classes is None:
                    raise InputError(f"case {name!r}: output {out.get('name')!r} has no rows to take argmax of")
                outputs.append({"name": out.get("name"), "argmax": classes})
            else:
                outputs.append({"name": out.get("name"), "data": data})
        if not outputs:
            raise InputError(f"case {name!r}: the answer has no outputs")
        recorded.append({"name": name, "inputs": case.get("inputs"), "outputs": outputs})
    block["cases"] = recorded
    try:
        parse_rollout({"analysis": {"goldenRequests": block}})
    except RolloutSpecError as error:
        raise InputError(f"the recorded block is not valid: {error}") from None
    return {"goldenRequests": block}


def _check_golden(args: argparse.Namespace) -> tuple[int, str]:
    from modeldeploy.analysis import golden
    from modeldeploy.rollout.config import RolloutSpecError, parse_rollout

    raw = _golden_input(args.file)
    if isinstance(raw, dict) and raw.get("kind") == KIND:
        raw = ((raw.get("spec") or {}).get("rollout") or {}).get("analysis") or {}
    if isinstance(raw, dict) and "goldenRequests" in raw:
        raw = raw["goldenRequests"]
    try:
        parsed = parse_rollout({"analysis": {"goldenRequests": raw}}).analysis
    except RolloutSpecError as error:
        raise InputError(f"{args.file}: {error}") from None
    assert parsed is not None and parsed.golden is not None
    spec = parsed.golden
    url = f"{args.url.rstrip('/')}/v2/models/{args.model}/infer"
    headers = _caller_headers(args)
    lines, wrong = [], 0
    for case in spec.cases:
        status, answer = _post_json(url, golden.request_body(case), args.timeout, headers)
        problem = golden.compare(case, spec, status, answer)
        wrong += problem is not None
        lines.append(f"{'WRONG' if problem else 'ok':5}  {case.name}" + (f": {problem}" if problem else ""))
    ok = wrong <= spec.max_mismatches
    lines.append(
        f"{wrong} of {len(spec.cases)} answers wrong {'<=' if ok else '>'} maxMismatches {spec.max_mismatches}: "
        f"{'passed' if ok else 'failed'}"
    )
    return (EXIT_OK if ok else EXIT_MISMATCH), "\n".join(lines) + "\n"


def _cmd_golden(args: argparse.Namespace) -> int:
    try:
        if args.action == "record":
            block = _record_golden(args)
            if args.output == "json":
                sys.stdout.write(json.dumps(block, indent=2) + "\n")
            else:
                sys.stdout.write(yaml.safe_dump(block, sort_keys=False, default_flow_style=None, width=120))
            return EXIT_OK
        status, text = _check_golden(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    sys.stdout.write(text)
    return status


# --- entry point -------------------------------------------------------------------------------------------

SUBCOMMANDS: list[Callable[[Any], None]] = [_add_render, _add_run, _add_demo, _add_golden]
"""Registration functions of the subcommands, in help order."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand in ``SUBCOMMANDS`` registered."""
    parser = argparse.ArgumentParser(
        prog="modeldeploy", description="Serve PyTorch models on Kubernetes from ModelDeployment resources."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_INVALID
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
