"""Calling a method of the running gateway over OPC UA, as the engineer: how the CLI changes state.

The inspection commands read the store directly; a change (``audit resolve``) instead goes through the
gateway's own OPC UA methods, so it is checked, logged and published like any other call. Outside the
demo profile the CLI signs and encrypts with a certificate of its own, created on first use and put in
the gateway's trust list.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gateway.config import CellConfig


def client_endpoint(endpoint: str) -> str:
    """The config's endpoint as a client on this machine reaches it: a wildcard listen address is local."""
    parts = urlsplit(endpoint)
    if parts.hostname in ("0.0.0.0", "::"):
        port = f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(netloc=f"127.0.0.1{port}"))
    return endpoint


async def call_gateway(
    cfg: CellConfig, endpoint: str, obj: str, method: str, args: list[str], user: str | None, password: str | None
) -> str | None:
    """Call a gateway method at ``endpoint`` as the engineer; None on success, else a readable error."""
    from asyncua import Client, ua
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    client = Client(endpoint, timeout=10)
    if user:
        client.set_user(user)
        client.set_password(password or "")
    if cfg.server.security_profile != "demo":
        key, cert, uri = await _cli_certificate(Path(cfg.server.pki_dir))
        client.application_uri = uri
        await client.set_security(
            SecurityPolicyBasic256Sha256, str(cert), str(key), mode=ua.MessageSecurityMode.SignAndEncrypt
        )
    try:
        async with client:
            ns = await client.get_namespace_index("urn:cell-gateway")
            request = ua.CallMethodRequest(
                ObjectId=ua.NodeId(obj, ns),
                MethodId=ua.NodeId(f"{obj}/{method}", ns),
                InputArguments=[ua.Variant(a, ua.VariantType.String) for a in args],
            )
            (result,) = await client.uaclient.call([request])
    except Exception as exc:
        return f"cannot reach the gateway at {endpoint}: {exc or type(exc).__name__}"
    if not result.StatusCode.is_good():
        return f"{method} refused: {result.StatusCode.name} (the gateway's log and `cell-gateway refusals` say why)"
    return None


async def _cli_certificate(pki: Path) -> tuple[Path, Path, str]:
    """The CLI's own certificate, created on first use and placed in the gateway's trust list."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    folder = pki / "cli"
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    uri = f"urn:{socket.gethostname()}:cell-gateway-cli"
    key, cert = folder / "cli_key.pem", folder / "cli_cert.der"
    await setup_self_signed_certificate(key, cert, uri, socket.gethostname(), [ExtendedKeyUsageOID.CLIENT_AUTH], {})
    os.chmod(key, 0o600)
    trusted = pki / "trusted" / "cell-gateway-cli.der"
    data = await asyncio.to_thread(cert.read_bytes)
    if not trusted.exists() or trusted.read_bytes() != data:
        await asyncio.to_thread(trusted.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(trusted.write_bytes, data)
    return key, cert, uri
