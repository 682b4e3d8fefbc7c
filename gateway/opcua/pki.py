"""The server's certificate and the trust list of client certificates, in ``server.pki_dir``.

Layout: ``own/server_key.pem`` and ``own/server_cert.der`` (created on first start, reused after, and
renewed by asyncua's helper when expired or issued for another host/URI); ``trusted/`` holds the DER
or PEM certificates of client applications allowed to connect outside the demo profile. A client whose
certificate is not trusted is refused, and its certificate is saved in ``rejected/``: an integrator
moves it to ``trusted/`` and the client connects on its next attempt, without a restart.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Pki:
    certificate: Path
    private_key: Path
    trusted: Path
    validator: Any


async def prepare_pki(root: Path, application_uri: str) -> Pki:
    own, trusted = root / "own", root / "trusted"
    own.mkdir(parents=True, exist_ok=True)
    trusted.mkdir(parents=True, exist_ok=True)
    key, cert = own / "server_key.pem", own / "server_cert.der"
    existed = key.is_file() and cert.is_file()
    before = cert.read_bytes() if existed else b""
    await setup_self_signed_certificate(
        key,
        cert,
        application_uri,
        socket.gethostname(),
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        {"organizationName": "cell-gateway", "commonName": application_uri},
    )
    if not existed:
        log.info("server_certificate_created", path=str(cert), application_uri=application_uri)
    elif cert.read_bytes() != before:
        log.warning("server_certificate_renewed", path=str(cert), why="expired, or issued for another host or URI")
    key.chmod(0o600)
    return Pki(cert, key, trusted, TrustList(trusted, root / "rejected"))


class TrustList:
    """asyncua's certificate validator over the ``trusted/`` folder, rebuilt when the folder changes."""

    def __init__(self, trusted: Path, rejected: Path) -> None:
        self.trusted = trusted
        self.rejected = rejected
        self._seen: tuple[tuple[str, float], ...] | None = None
        self._validator: CertificateValidator | None = None

    def _listing(self) -> tuple[tuple[str, float], ...]:
        return tuple(sorted((p.name, p.stat().st_mtime) for p in self.trusted.iterdir() if p.is_file()))

    async def __call__(self, certificate: x509.Certificate, app_description: Any) -> None:
        listing = self._listing()
        if listing != self._seen:
            self._seen = listing
            self._validator = None
            if listing:
                store = TrustStore([self.trusted], [])
                await store.load()
                self._validator = CertificateValidator(
                    CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT, store
                )
        try:
            if self._validator is None:
                raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
            await self._validator.validate(certificate, app_description)
        except ServiceError as refused:
            self._reject(certificate, app_description, refused)
            raise

    def _reject(self, certificate: x509.Certificate, app_description: Any, refused: ServiceError) -> None:
        self.rejected.mkdir(parents=True, exist_ok=True)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in certificate.subject.rfc4514_string())[:80]
        path = (
            self.rejected
            / f"{name}-{certificate.fingerprint(certificate.signature_hash_algorithm or _sha256()).hex()[:12]}.der"
        )
        path.write_bytes(certificate.public_bytes(Encoding.DER))
        log.warning(
            "client_certificate_refused",
            subject=certificate.subject.rfc4514_string(),
            application_uri=getattr(app_description, "ApplicationUri", ""),
            status=ua.StatusCode(refused.code).name,
            saved=str(path),
            hint=f"to trust it, move it to {self.trusted}",
        )


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()
