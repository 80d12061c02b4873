"""Talos secrets bundles, generated natively in the shape `talosctl gen secrets` writes.

A bundle is a plain dict::

    cluster:    {id, secret}
    secrets:    {bootstraptoken, secretboxencryptionsecret}   (or aescbcencryptionsecret, pre-1.3 bundles)
    trustdinfo: {token}
    certs:      {etcd, k8s, k8saggregator: {crt, key}, k8sserviceaccount: {key}, os: {crt, key}}

Every ``crt``/``key`` is standard base64 of a PEM document, as Talos stores them.

The certificate details follow what Talos's generator (siderolabs/crypto) produces for the
v1.11-v1.13 version contracts, so a bundle made here is indistinguishable from one made by
talosctl: self-signed CAs with a random 128-bit serial, subject ``O=<name>`` only (the aggregator
CA has an empty subject), key usage digitalSignature+certSign (critical), extended key usage
serverAuth+clientAuth, basicConstraints CA (critical) and a random 20-byte subject key id; the
os CA is Ed25519 (PKCS#8 under the ``ED25519 PRIVATE KEY`` label), the others ECDSA P-256 with
SHA-256 (SEC1 ``EC PRIVATE KEY``); CAs are valid for 3650 days.  Since Talos 1.7 the Kubernetes
service-account key is RSA-4096 (PKCS#1 ``RSA PRIVATE KEY``): older bundles, such as the ones
in Talos's own test data, carry an ECDSA key there, and both are accepted on input.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pipeline.errors import PipelineError
from pipeline.talos.contracts import SUPPORTED_CONTRACTS as SUPPORTED_CONTRACTS  # re-exported
from pipeline.talos.contracts import contract

CA_VALIDITY = timedelta(days=3650)  # Talos: 87600h
ADMIN_CERT_VALIDITY = timedelta(days=365)  # Talos: TalosAPIDefaultCertificateValidityDuration
ADMIN_ROLE = "os:admin"

_TOKEN_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
TOKEN_PATTERN = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
_PEM_PATTERN = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----",
    re.DOTALL,
)
# Characters of an ASN.1 PrintableString; Go encodes subject strings with it whenever it can.
_PRINTABLE = re.compile(r"^[A-Za-z0-9 '()+,\-./:=?]*$")

_CERT_SECTIONS = ("etcd", "k8s", "k8saggregator", "k8sserviceaccount", "os")
_KEY_LABELS = ("EC PRIVATE KEY", "ED25519 PRIVATE KEY", "RSA PRIVATE KEY", "PRIVATE KEY")

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


# --- encoding helpers -------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pem(label: str, der: bytes) -> bytes:
    # Same layout as Go's pem.EncodeToMemory: 64-column body, trailing newline.
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    text = f"-----BEGIN {label}-----\n" + "".join(f"{line}\n" for line in lines) + f"-----END {label}-----\n"
    return text.encode("ascii")


def _pem_decode(data: bytes) -> tuple[str, bytes]:
    """The label and DER body of the first PEM block (like Go's pem.Decode)."""
    match = _PEM_PATTERN.search(data.decode("ascii", errors="replace"))
    if match is None:
        raise ValueError("not a PEM document")
    body = "".join(match.group(2).split())
    return match.group(1), base64.b64decode(body, validate=True)


def _key_pem(key: PrivateKey) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        # Talos keeps PKCS#8 DER but under its own label, which cryptography's PEM writer cannot emit.
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        return _pem("ED25519 PRIVATE KEY", der)
    # EC -> SEC1 "EC PRIVATE KEY", RSA -> PKCS#1 "RSA PRIVATE KEY", as Go's Marshal*PrivateKey.
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    label = "EC PRIVATE KEY" if isinstance(key, ec.EllipticCurvePrivateKey) else "RSA PRIVATE KEY"
    return _pem(label, der)


def load_private_key(pem: bytes) -> PrivateKey:
    """Parse a private key PEM in any of the encodings Talos writes (label checked against type)."""
    label, der = _pem_decode(pem)
    if label not in _KEY_LABELS:
        raise ValueError(f"unexpected PEM label {label!r}")
    # OpenSSL's full RSA check (primality tests) costs ~0.25 s for a 4096-bit key and runs on every
    # validation; the structure is still parsed, and Kubernetes checks the key when it loads it.
    try:
        key = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
    except (TypeError, UnsupportedAlgorithm) as error:  # encrypted, or an algorithm Talos never writes
        raise ValueError(str(error)) from None
    expected: dict[str, type | tuple[type, ...]] = {
        "EC PRIVATE KEY": ec.EllipticCurvePrivateKey,
        "ED25519 PRIVATE KEY": ed25519.Ed25519PrivateKey,
        "RSA PRIVATE KEY": rsa.RSAPrivateKey,
        "PRIVATE KEY": (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey),
    }
    if not isinstance(key, expected[label]):
        raise ValueError(f"PEM label {label!r} does not match a {type(key).__name__}")
    return key  # type: ignore[return-value]


def load_certificate(pem: bytes) -> x509.Certificate:
    """Parse a certificate PEM (first block, like Go's pem.Decode)."""
    label, der = _pem_decode(pem)
    if label != "CERTIFICATE":
        raise ValueError(f"unexpected PEM label {label!r}")
    return x509.load_der_x509_certificate(der)


def _name(organizations: Iterable[str]) -> x509.Name:
    attributes = []
    for org in organizations:
        # Go picks PrintableString when the text allows it, UTF8String otherwise; match it so the
        # DER is what talosctl would have written.
        kind = _ASN1Type.PrintableString if _PRINTABLE.match(org) else _ASN1Type.UTF8String
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org, _type=kind))
    return x509.Name(attributes)


def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None  # pure Ed25519
    if isinstance(key, rsa.RSAPrivateKey):
        return hashes.SHA512()  # siderolabs/crypto signs with SHA512WithRSA
    return hashes.SHA256()


def _serial() -> int:
    # Go: rand.Int(0, 2**128); x509 requires a positive serial, so 0 is excluded.
    return secrets.randbelow(2**128 - 1) + 1


def _utc_now(now: datetime | None) -> datetime:
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Certificates carry whole seconds; dropping the rest keeps NotAfter - NotBefore exact.
    return moment.astimezone(UTC).replace(microsecond=0)


def _new_ca(organizations: list[str], key: PrivateKey, now: datetime) -> dict[str, str]:
    name = _name(organizations)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now)
        .not_valid_after(now + CA_VALIDITY)
        # Extension order as Go's x509.CreateCertificate writes them.
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                          crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        # Random, not a SHA-1 of the key: Talos does this since its FIPS 140-3 work.
        .add_extension(x509.SubjectKeyIdentifier(secrets.token_bytes(20)), critical=False)
    )
    cert = builder.sign(key, _hash_for(key))
    return {
        "crt": _b64(cert.public_bytes(serialization.Encoding.PEM)),
        "key": _b64(_key_pem(key)),
    }


def _token() -> str:
    # Uniform over [a-z0-9], like Talos's rejection-sampled genToken(6, 16).
    first = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(6))
    second = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(16))
    return f"{first}.{second}"


# --- public API -------------------------------------------------------------------------------


def generate_bundle(talos_version: str = "v1.11", now: datetime | None = None) -> dict:
    """A new secrets bundle in the exact structure `talosctl gen secrets` writes.

    Sections cluster, secrets, trustdinfo and certs, for a supported ``talos_version``; ``now``
    (default: the current time) is the CAs' NotBefore.
    """
    contract(talos_version)  # every supported contract (> v1.6) generates the same shape
    moment = _utc_now(now)
    return {
        "cluster": {
            # URL-safe for the id, standard for the secret: as Talos v1.11-v1.13 encode them.
            "id": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii"),
            "secret": _b64(secrets.token_bytes(32)),
        },
        "secrets": {
            "bootstraptoken": _token(),
            # Contracts after v1.2 use secretbox; aescbcencryptionsecret is never written.
            "secretboxencryptionsecret": _b64(secrets.token_bytes(32)),
        },
        "trustdinfo": {"token": _token()},
        "certs": {
            "etcd": _new_ca(["etcd"], ec.generate_private_key(ec.SECP256R1()), moment),
            "k8s": _new_ca(["kubernetes"], ec.generate_private_key(ec.SECP256R1()), moment),
            # Talos passes CommonName("front-proxy") but its CA helper only copies organizations.
            "k8saggregator": _new_ca([], ec.generate_private_key(ec.SECP256R1()), moment),
            # Contracts after v1.6 use RSA here for OIDC client compatibility.
            "k8sserviceaccount": {
                "key": _b64(_key_pem(rsa.generate_private_key(public_exponent=65537, key_size=4096))),
            },
            "os": _new_ca(["talos"], ed25519.Ed25519PrivateKey.generate(), moment),
        },
    }


def _fail(source: str, message: str) -> PipelineError:
    return PipelineError(f"secrets bundle: {message}", path=source)


def _section(parent: dict, name: str, allowed: tuple[str, ...], source: str, prefix: str = "") -> dict:
    path = f"{prefix}{name}"
    value = parent.get(name)
    if value is None:
        raise _fail(source, f"{path} is missing")
    if not isinstance(value, dict):
        raise _fail(source, f"{path} must be a mapping")
    for key in value:
        if key not in allowed:
            raise _fail(source, f"unknown field {path}.{key}")
    return value


def _string(section: dict, path: str, key: str, source: str) -> str:
    value = section.get(key)
    if value is None or value == "":
        raise _fail(source, f"{path}.{key} is missing")
    if not isinstance(value, str):
        raise _fail(source, f"{path}.{key} must be a string")
    return value


def _decode_b64(value: str, field: str, source: str, *, urlsafe: bool = False) -> bytes:
    if urlsafe:
        # Translate rather than use urlsafe_b64decode, which silently skips stray characters.
        value = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise _fail(source, f"{field} is not valid base64") from None


def _check_pem_field(section: dict, path: str, key: str, source: str) -> bytes:
    text = _string(section, path, key, source)
    pem = _decode_b64(text, f"{path}.{key}", source)
    if b"-----BEGIN " not in pem:
        raise _fail(source, f"{path}.{key} is not base64 of a PEM document")
    return pem


def _public_bytes(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def validate_bundle(bundle: dict, source: str) -> None:
    """Raise PipelineError(path=source) naming the first missing/malformed field."""
    if not isinstance(bundle, dict):
        raise _fail(source, "must be a mapping with cluster, secrets, trustdinfo and certs")
    for key in bundle:
        if key not in ("cluster", "secrets", "trustdinfo", "certs"):
            raise _fail(source, f"unknown field {key}")

    cluster = _section(bundle, "cluster", ("id", "secret"), source)
    # Talos v1.11-v1.13 write the id URL-safe and newer ones standard: accept both alphabets.
    cluster_id = _string(cluster, "cluster", "id", source)
    _decode_b64(cluster_id, "cluster.id", source, urlsafe=True)
    _decode_b64(_string(cluster, "cluster", "secret", source), "cluster.secret", source)

    secret_fields = ("bootstraptoken", "aescbcencryptionsecret", "secretboxencryptionsecret")
    secrets_section = _section(bundle, "secrets", secret_fields, source)
    token = _string(secrets_section, "secrets", "bootstraptoken", source)
    if not TOKEN_PATTERN.match(token):
        raise _fail(source, "secrets.bootstraptoken must match [a-z0-9]{6}.[a-z0-9]{16}")
    has_secretbox = bool(secrets_section.get("secretboxencryptionsecret"))
    has_aescbc = bool(secrets_section.get("aescbcencryptionsecret"))
    if has_secretbox and has_aescbc:
        raise _fail(
            source, "only one of secrets.secretboxencryptionsecret, secrets.aescbcencryptionsecret is allowed"
        )
    if not (has_secretbox or has_aescbc):
        raise _fail(source, "secrets.secretboxencryptionsecret is missing")
    if has_secretbox:
        value = _string(secrets_section, "secrets", "secretboxencryptionsecret", source)
        if len(_decode_b64(value, "secrets.secretboxencryptionsecret", source)) != 32:
            raise _fail(source, "secrets.secretboxencryptionsecret must be base64 of 32 bytes")
    else:
        value = _string(secrets_section, "secrets", "aescbcencryptionsecret", source)
        if len(_decode_b64(value, "secrets.aescbcencryptionsecret", source)) not in (16, 24, 32):
            raise _fail(source, "secrets.aescbcencryptionsecret must be base64 of 16, 24 or 32 bytes")

    trustd = _section(bundle, "trustdinfo", ("token",), source)
    trustd_token = _string(trustd, "trustdinfo", "token", source)
    if any(ch.isspace() for ch in trustd_token):
        raise _fail(source, "trustdinfo.token must not contain whitespace")

    certs = _section(bundle, "certs", _CERT_SECTIONS, source)
    for name in _CERT_SECTIONS:
        allowed = ("key",) if name == "k8sserviceaccount" else ("crt", "key")
        pair = _section(certs, name, allowed, source, prefix="certs.")
        path = f"certs.{name}"
        key_pem = _check_pem_field(pair, path, "key", source)
        try:
            key = load_private_key(key_pem)
        except ValueError as error:
            raise _fail(source, f"{path}.key is not a usable private key: {error}") from None
        if name == "k8sserviceaccount":
            continue
        crt_pem = _check_pem_field(pair, path, "crt", source)
        try:
            cert = load_certificate(crt_pem)
        except ValueError as error:
            raise _fail(source, f"{path}.crt is not a usable certificate: {error}") from None
        if _public_bytes(cert.public_key()) != _public_bytes(key.public_key()):
            raise _fail(source, f"{path}.key does not belong to {path}.crt")
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise _fail(source, f"{path}.crt is not a CA certificate")


def issue_admin_certificate(
    bundle: dict, now: datetime | None = None, roles: tuple[str, ...] = (ADMIN_ROLE,)
) -> tuple[str, str]:
    """A Talos API client certificate signed by the bundle's os CA: (base64 crt PEM, base64 key PEM).

    Mirrors talosctl's admin certificate: subject O=<roles>, issuer the os CA, digitalSignature
    key usage, clientAuth extended key usage, valid 365 days, key of the CA's kind (Ed25519 for the
    usual os CA).
    """
    os_ca = bundle["certs"]["os"]
    ca_cert = load_certificate(base64.b64decode(os_ca["crt"]))
    ca_key = load_private_key(base64.b64decode(os_ca["key"]))
    if isinstance(ca_key, ed25519.Ed25519PrivateKey):
        key: PrivateKey = ed25519.Ed25519PrivateKey.generate()
    elif isinstance(ca_key, ec.EllipticCurvePrivateKey):
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    moment = _utc_now(now)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(roles))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(moment)
        .not_valid_after(moment + ADMIN_CERT_VALIDITY)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        ski = None
    if ski:
        # Go links a leaf to its issuer's key id whenever the issuer has one.
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier(key_identifier=ski, authority_cert_issuer=None,
                                        authority_cert_serial_number=None),
            critical=False,
        )
    # The leaf is signed with the CA key, hashing as that key type requires.
    cert = builder.sign(ca_key, _hash_for(ca_key))
    return _b64(cert.public_bytes(serialization.Encoding.PEM)), _b64(_key_pem(key))

