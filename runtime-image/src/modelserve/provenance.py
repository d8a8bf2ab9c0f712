"""Sigstore verification of a fetched artifact: who signed it, and that it is the bytes they signed.

Needs the optional `sigstore` package (`pip install 'modelserve[sigstore]'`). The check is keyless
Sigstore verification of a bundle (`cosign sign-blob --bundle`, `sigstore sign --bundle`): the signing
certificate must chain to the trust root's Fulcio CA at the time the transparency log recorded the entry,
carry an SCT from a trusted CT log, name the expected identity (SAN: e-mail or URI) and OIDC issuer, and
the log entry (inclusion proof, checkpoint and promise, signed by a trusted Rekor key) must describe this
signature over this artifact's sha256. Verification itself is offline: the trust root is either a file
(`--trusted-root`, e.g. for a private Sigstore deployment) or the public-good root that sigstore-python
refreshes over TUF (the one network access, falling back to its cached and bundled copy).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from modelserve.errors import MissingDependency, SignatureInvalid

log = logging.getLogger(__name__)

BUNDLE_SUFFIX = ".sigstore.json"


@dataclass(frozen=True, slots=True)
class SignaturePolicy:
    identity: str  # the signer: an e-mail or a URI (e.g. a CI workflow identity)
    issuer: str  # the OIDC issuer that vouched for it
    bundle: str | None = None  # URI or path of the bundle; None: <artifact URI>.sigstore.json
    trusted_root: Path | None = None  # a trusted_root.json; None: Sigstore's public-good instance

    def bundle_uri(self, artifact_uri: str) -> str:
        return self.bundle or artifact_uri + BUNDLE_SUFFIX


def verify_artifact(sha256: str, bundle_path: Path, policy: SignaturePolicy, artifact_name: str) -> None:
    """Raise SignatureInvalid unless the bundle proves `policy.identity` signed the artifact whose sha256
    (hex) is given. The artifact is identified by digest, so it is never read into memory here."""
    try:
        from sigstore.errors import Error as SigstoreError
        from sigstore.hashes import Hashed
        from sigstore.models import Bundle, TrustedRoot
        from sigstore.verify import Verifier
        from sigstore.verify.policy import Identity
        from sigstore_models.common.v1 import HashAlgorithm
    except ImportError:
        raise MissingDependency(
            "signature verification needs sigstore, which is not installed: pip install 'modelserve[sigstore]'"
        ) from None
    try:
        raw = bundle_path.read_bytes()
    except OSError as exc:
        raise SignatureInvalid(f"cannot read signature bundle {bundle_path}: {exc.strerror}") from None
    try:
        bundle = Bundle.from_json(raw)
    except Exception as exc:  # sigstore raises pydantic, JSON and its own errors for malformed bundles
        raise SignatureInvalid(f"malformed signature bundle for {artifact_name}: {_first_line(exc)}") from None
    try:
        if policy.trusted_root is not None:
            verifier = Verifier(trusted_root=TrustedRoot.from_file(str(policy.trusted_root)))
        else:
            verifier = Verifier.production()
    except Exception as exc:  # unreadable trust root, TUF refresh failure without a cached root
        raise SignatureInvalid(f"cannot load the Sigstore trust root: {_first_line(exc)}") from None
    digest = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(sha256))
    try:
        verifier.verify_artifact(digest, bundle, Identity(identity=policy.identity, issuer=policy.issuer))
    except SigstoreError as exc:
        raise SignatureInvalid(
            f"signature of {artifact_name} does not verify for identity {policy.identity!r} "
            f"(issuer {policy.issuer!r}): {_first_line(exc)}"
        ) from None
    log.info("Verified Sigstore signature of %s by %s (issuer %s)", artifact_name, policy.identity, policy.issuer)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
