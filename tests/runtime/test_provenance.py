"""Sigstore verification in `modelserve fetch`, fully offline.

The tests build a throwaway Sigstore instance in memory: a Fulcio-like CA, a CT log key that issues the
leaf's embedded SCT (RFC 6962 precertificate timestamp), and a Rekor key that signs the log entry's
promise (SET) and a one-leaf checkpoint. Their public parts form a trusted_root.json passed with
--trusted-root. Nothing in sigstore's verifier is replaced: every check runs on real signatures.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("sigstore")

import rfc8785
from cryptography import x509
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from modelserve import cli

SIGNED_AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
IDENTITY = "release-bot@models.example.com"
ISSUER = "https://accounts.example.com"
OIDC_ISSUER_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ARTIFACT = b"model weights \x00\x01\x02" * 1000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


@dataclass
class Instance:
    """A private Sigstore instance: CA, CT log and transparency log keys."""

    ca_key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate
    ct_key: ec.EllipticCurvePrivateKey
    log_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls) -> Instance:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelserve test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(1)
            .not_valid_before(SIGNED_AT - timedelta(days=30))
            .not_valid_after(SIGNED_AT + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return cls(ca_key, ca, ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1()))

    def trusted_root(self) -> dict[str, object]:
        def log(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, object]:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "logId": {"keyId": _b64(hashlib.sha256(_spki(key)).digest())},
                "publicKey": {
                    "rawBytes": _b64(_spki(key)),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2025-01-01T00:00:00Z"},
                },
            }

        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.log_key, "https://rekor.invalid")],
            "ctlogs": [log(self.ct_key, "https://ct.invalid")],
            "certificateAuthorities": [
                {
                    "subject": {"commonName": "modelserve test CA", "organization": "test"},
                    "uri": "https://fulcio.invalid",
                    "certChain": {
                        "certificates": [{"rawBytes": _b64(self.ca.public_bytes(serialization.Encoding.DER))}]
                    },
                    "validFor": {"start": "2025-01-01T00:00:00Z"},
                }
            ],
        }

    def leaf(self, key: ec.EllipticCurvePrivateKey, identity: str, issuer: str) -> x509.Certificate:
        """A short-lived code-signing certificate with an embedded SCT, as Fulcio issues."""
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(SIGNED_AT - timedelta(minutes=5))
            .not_valid_after(SIGNED_AT + timedelta(minutes=5))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(identity)]), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False)
            .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_OID, issuer.encode()), critical=False)
        )
        # RFC 6962 3.2: the CT log signs the precertificate's TBS (without the SCT list) and the issuer key hash.
        tbs = builder.sign(self.ca_key, hashes.SHA256()).tbs_certificate_bytes
        millis = int(SIGNED_AT.timestamp() * 1000) - 1000
        signed = (
            struct.pack("!BBQH", 0, 0, millis, 1)  # v1, certificate_timestamp, timestamp, precert_entry
            + hashlib.sha256(_spki(self.ca_key)).digest()
            + len(tbs).to_bytes(3, "big")
            + tbs
            + b"\x00\x00"  # no extensions
        )
        signature = _sign(self.ct_key, signed)
        sct = (
            b"\x00"
            + hashlib.sha256(_spki(self.ct_key)).digest()
            + struct.pack("!QH", millis, 0)
            + struct.pack("!BBH", 4, 3, len(signature))  # sha256, ecdsa
            + signature
        )
        sct_list = struct.pack("!HH", len(sct) + 2, len(sct)) + sct
        ext = x509.UnrecognizedExtension(ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS, asn1.encode_der(sct_list))
        return builder.add_extension(ext, critical=False).sign(self.ca_key, hashes.SHA256())

    def bundle(self, artifact: bytes, identity: str = IDENTITY, issuer: str = ISSUER) -> str:
        """A v0.3 bundle for a hashedrekord 0.0.1 entry at index 0 of a one-leaf log."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.leaf(key, identity, issuer)
        signature = _sign(key, artifact)
        digest = hashlib.sha256(artifact).digest()
        body = rfc8785.dumps(
            {
                "apiVersion": "0.0.1",
                "kind": "hashedrekord",
                "spec": {
                    "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
                    "signature": {
                        "content": _b64(signature),
                        "publicKey": {"content": _b64(cert.public_bytes(serialization.Encoding.PEM))},
                    },
                },
            }
        )
        log_id = hashlib.sha256(_spki(self.log_key)).digest()
        integrated = int(SIGNED_AT.timestamp())
        promise = rfc8785.dumps(
            {"body": _b64(body), "integratedTime": integrated, "logID": log_id.hex(), "logIndex": 0}
        )
        leaf_hash = hashlib.sha256(b"\x00" + body).digest()  # RFC 6962 leaf hash; a one-leaf tree's root
        note = f"rekor.invalid\n1\n{_b64(leaf_hash)}\n"
        checkpoint = f"{note}\n\u2014 rekor.invalid {_b64(log_id[:4] + _sign(self.log_key, note.encode()))}\n"
        entry = {
            "logIndex": "0",
            "logId": {"keyId": _b64(log_id)},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
            "integratedTime": str(integrated),
            "canonicalizedBody": _b64(body),
            "inclusionPromise": {"signedEntryTimestamp": _b64(_sign(self.log_key, promise))},
            "inclusionProof": {
                "logIndex": "0",
                "rootHash": _b64(leaf_hash),
                "treeSize": "1",
                "hashes": [],
                "checkpoint": {"envelope": checkpoint},
            },
        }
        return json.dumps(
            {
                "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                "verificationMaterial": {
                    "certificate": {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))},
                    "tlogEntries": [entry],
                },
                "messageSignature": {
                    "messageDigest": {"algorithm": "SHA2_256", "digest": _b64(digest)},
                    "signature": _b64(signature),
                },
            }
        )


@pytest.fixture(scope="module")
def instance() -> Instance:
    return Instance.create()


@dataclass
class Release:
    artifact: Path
    root: Path
    dest: Path


@pytest.fixture
def release(tmp_path: Path, instance: Instance) -> Release:
    src = tmp_path / "src"
    src.mkdir()
    artifact = src / "model.pt"
    artifact.write_bytes(ARTIFACT)
    (src / "model.pt.sigstore.json").write_text(instance.bundle(ARTIFACT))
    root = tmp_path / "trusted_root.json"
    root.write_text(json.dumps(instance.trusted_root()))
    return Release(artifact, root, tmp_path / "dest")


def fetch(release: Release, *extra: str, identity: str = IDENTITY, issuer: str = ISSUER) -> int:
    args = ["fetch", str(release.artifact), str(release.dest), "--trusted-root", str(release.root)]
    return cli.main([*args, "--verify-identity", identity, "--verify-issuer", issuer, *extra])


def dest_entries(release: Release) -> list[str]:
    return sorted(p.name for p in release.dest.iterdir()) if release.dest.exists() else []


def test_a_valid_signature_is_accepted(release: Release, capsys: pytest.CaptureFixture[str]) -> None:
    assert fetch(release) == 0
    assert (release.dest / "model.pt").read_bytes() == ARTIFACT
    assert dest_entries(release) == ["model.pt"]  # no bundle, no staging directory left behind
    assert hashlib.sha256(ARTIFACT).hexdigest() in capsys.readouterr().out


def test_a_bundle_given_explicitly(release: Release, tmp_path: Path, instance: Instance) -> None:
    elsewhere = tmp_path / "signatures" / "b.json"
    elsewhere.parent.mkdir()
    elsewhere.write_text(instance.bundle(ARTIFACT))
    (release.artifact.parent / "model.pt.sigstore.json").unlink()
    assert fetch(release, "--signature-bundle", str(elsewhere)) == 0
    assert dest_entries(release) == ["model.pt"]


def _fails(release: Release, caplog: pytest.LogCaptureFixture, message: str, *extra: str, **policy: str) -> None:
    assert fetch(release, *extra, **policy) == 9
    assert dest_entries(release) == []
    assert message in caplog.text, caplog.text


def test_a_tampered_artifact_is_refused(release: Release, caplog: pytest.LogCaptureFixture) -> None:
    release.artifact.write_bytes(ARTIFACT[:-1] + b"\xff")
    _fails(release, caplog, "digest mismatch")


def test_another_identity_is_refused(release: Release, caplog: pytest.LogCaptureFixture) -> None:
    _fails(release, caplog, "does not verify for identity 'someone@else.example'", identity="someone@else.example")


def test_another_issuer_is_refused(release: Release, caplog: pytest.LogCaptureFixture) -> None:
    _fails(release, caplog, "issuer", issuer="https://evil.example")


def test_a_missing_bundle_is_refused(release: Release, caplog: pytest.LogCaptureFixture) -> None:
    (release.artifact.parent / "model.pt.sigstore.json").unlink()
    _fails(release, caplog, "no signature bundle at")


def test_a_malformed_bundle_is_refused(release: Release, caplog: pytest.LogCaptureFixture) -> None:
    (release.artifact.parent / "model.pt.sigstore.json").write_text('{"mediaType": "nonsense"}')
    _fails(release, caplog, "malformed signature bundle")


def test_a_signature_from_another_instance_is_refused(release: Release, caplog: pytest.LogCaptureFixture) -> None:
    forged = Instance.create().bundle(ARTIFACT)  # right identity, but a CA and logs we do not trust
    (release.artifact.parent / "model.pt.sigstore.json").write_text(forged)
    _fails(release, caplog, "failed to build timestamp certificate chain")


def test_a_bundle_for_other_bytes_is_refused(
    release: Release, instance: Instance, caplog: pytest.LogCaptureFixture
) -> None:
    (release.artifact.parent / "model.pt.sigstore.json").write_text(instance.bundle(b"another model"))
    _fails(release, caplog, "digest mismatch")


def test_a_forged_log_promise_is_refused(release: Release, caplog: pytest.LogCaptureFixture) -> None:
    path = release.artifact.parent / "model.pt.sigstore.json"
    bundle = json.loads(path.read_text())
    entry = bundle["verificationMaterial"]["tlogEntries"][0]
    set_bytes = base64.b64decode(entry["inclusionPromise"]["signedEntryTimestamp"])
    entry["inclusionPromise"]["signedEntryTimestamp"] = _b64(set_bytes[:-1] + bytes([set_bytes[-1] ^ 1]))
    path.write_text(json.dumps(bundle))
    _fails(release, caplog, "invalid inclusion promise")


def test_digest_and_signature_together(release: Release) -> None:
    assert fetch(release, "--sha256", "0" * 64) == 5
    assert dest_entries(release) == []
    assert fetch(release, "--sha256", hashlib.sha256(ARTIFACT).hexdigest()) == 0


def test_usage_errors(release: Release, tmp_path: Path) -> None:
    assert cli.main(["fetch", str(release.artifact), str(release.dest), "--verify-identity", IDENTITY]) == 2
    assert cli.main(["fetch", str(release.artifact), str(release.dest), "--signature-bundle", "x"]) == 2
    assert fetch(Release(release.artifact.parent, release.root, release.dest)) == 2  # a directory
    assert dest_entries(release) == []
    (tmp_path / "bad_root.json").write_text("{}")
    assert fetch(Release(release.artifact, tmp_path / "bad_root.json", release.dest)) == 9
