"""Credentials of a deployment: a CA, the TLS certificates, the SuperNode authentication keys
and the SuperExec secrets, one folder per service (``fairsynth deploy-certs``).

One folder per service; each container (or process) sees only its own folder::

  ca/            ca.crt, ca.key  (the key signs the certificates: keep it off every service)
  superlink/     ca.crt, server.pem, server.key, superexec.secret
  serverapp/     ca.crt, superexec.secret                  (the SuperLink's executor)
  supernode-k/   ca.crt, server.pem, server.key, auth.key, auth.pub, superexec.secret
  clientapp-k/   ca.crt, superexec.secret                  (SuperNode k's executor)
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import logging
import secrets
from collections.abc import Sequence
from pathlib import Path

from common.errors import ConfigError, DataError
from simulations.deployment import LOOPBACK

logger = logging.getLogger(__name__)

#: Validity of the certificates, in days (``deploy-certs --days``).
CERT_DAYS = 365
#: The files in each kind of service folder.
SERVICE_FILES = {
    "superlink": ("ca.crt", "server.pem", "server.key", "superexec.secret"),
    "serverapp": ("ca.crt", "superexec.secret"),
    "supernode": ("ca.crt", "server.pem", "server.key", "auth.key", "auth.pub",
                  "superexec.secret"),
    "clientapp": ("ca.crt", "superexec.secret"),
}


def supernode(k: int) -> str:
    """Service name of client ``k`` (1-based) — also its hostname in docker-compose.yml."""
    return f"supernode-{k}"


def clientapp(k: int) -> str:
    """Service name of SuperNode ``k``'s ClientApp executor (1-based)."""
    return f"clientapp-{k}"


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Where :func:`generate_credentials` put everything (see the module's layout)."""

    root: Path
    clients: int

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca.crt"

    def folder(self, service: str) -> Path:
        return self.root / service

    def auth_key(self, k: int) -> Path:
        return self.folder(supernode(k)) / "auth.key"

    def auth_pub(self, k: int) -> Path:
        return self.folder(supernode(k)) / "auth.pub"

    def services(self) -> list[str]:
        """Every service folder, SuperLink side first."""
        return ["superlink", "serverapp",
                *(name for k in range(1, self.clients + 1) for name in (supernode(k),
                                                                          clientapp(k)))]

    @classmethod
    def load(cls, root: Path, *, clients: int) -> Credentials:
        """Check that ``root`` holds credentials for ``clients`` SuperNodes."""
        creds = cls(Path(root), clients)
        needed = [creds.ca_cert, *(creds.folder(s) / f for s in creds.services()
                                   for f in SERVICE_FILES[s.split("-")[0]])]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise DataError(
                f"{root} lacks credential file(s) {missing[:4]}{' …' if len(missing) > 4 else ''}"
                f". Create them with `fairsynth deploy-certs --out {root} --clients {clients}`."
            )
        return creds


def generate_credentials(out: Path, *, clients: int, hostnames: Sequence[str] = (),
                         days: int = CERT_DAYS, force: bool = False) -> Credentials:
    """Create a CA, TLS certificates, SuperNode authentication keys and SuperExec secrets.

    The CA and all keys are ECDSA on P-384; certificates are X.509 v3 signed with SHA-256.
    The SuperLink's certificate names ``superlink``, ``localhost``, ``127.0.0.1`` and every
    entry of ``hostnames`` (DNS names or IP addresses under which clients reach it);
    SuperNode ``k``'s names ``supernode-k``, ``localhost`` and ``127.0.0.1`` (its Runtime API
    is reached by its ClientApp executor only). SuperNode authentication keys are written in
    OpenSSH format, as ``flower-supernode --auth-supernode-private-key`` and
    ``flwr supernode register`` expect. Each SuperExec secret is 32 random bytes (hex).

    Parameters
    ----------
    out : Path
        Target folder; refused if it already holds a CA unless ``force``.
    clients : int
        Number of SuperNodes ``K``.
    hostnames : sequence of str
        Extra names for the SuperLink's certificate.
    days : int
        Validity of every certificate.
    force : bool
        Replace existing credentials.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if clients < 1:
        raise ConfigError(f"the number of clients must be ≥ 1, got {clients}.")
    if days < 1:
        raise ConfigError(f"certificates must be valid for ≥ 1 day, got {days}.")
    out = Path(out)
    creds = Credentials(out, clients)
    if creds.ca_cert.exists() and not force:
        raise ConfigError(
            f"{out} already holds credentials (a CA in {creds.ca_cert.parent}); pass --force to "
            "replace them all (every registered SuperNode key changes) or choose another --out."
        )
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    no_password = serialization.NoEncryption()

    def new_key():
        return ec.generate_private_key(ec.SECP384R1())

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fairsynth"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write(path: Path, data: bytes, *, private: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o600 if private else 0o644)

    ca_key = new_key()
    ca_name = name("fairsynth federation CA")
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(pem)
    write(creds.ca_cert, ca_pem, private=False)
    write(creds.root / "ca" / "ca.key", ca_key.private_bytes(pem, pkcs8, no_password),
          private=True)

    def server_cert(service: str, names: Sequence[str]) -> None:
        key = new_key()
        alt = []
        for n in dict.fromkeys(names):  # keep order, drop duplicates
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        cert = (
            x509.CertificateBuilder().subject_name(name(service)).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        folder = creds.folder(service)
        write(folder / "server.pem", cert.public_bytes(pem), private=False)
        write(folder / "server.key", key.private_bytes(pem, pkcs8, no_password), private=True)

    def secret_pair(service: str, executor: str) -> None:
        value = secrets.token_hex(32).encode()
        for s in (service, executor):
            write(creds.folder(s) / "ca.crt", ca_pem, private=False)
            write(creds.folder(s) / "superexec.secret", value, private=True)

    server_cert("superlink", ["superlink", "localhost", LOOPBACK, *hostnames])
    secret_pair("superlink", "serverapp")
    for k in range(1, clients + 1):
        server_cert(supernode(k), [supernode(k), "localhost", LOOPBACK])
        secret_pair(supernode(k), clientapp(k))
        generate_auth_key(creds.auth_key(k))
    logger.info("wrote a CA and credentials for the SuperLink and %d SuperNodes to %s",
                clients, out)
    return creds


def generate_auth_key(path: Path) -> Path:
    """A SuperNode authentication key pair: ``path`` (OpenSSH private), ``path.pub`` → returned.

    The public key file ends in ``.pub`` next to the private one, e.g. ``auth.key`` →
    ``auth.pub``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    pub = path.with_suffix(".pub")
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                  serialization.PublicFormat.OpenSSH) + b"\n")
    pub.chmod(0o644)
    return pub

