"""The daemon's TLS: the certificate it serves ``wss://`` with, and the server's :class:`ssl.SSLContext`.

websockets serves TLS through the standard library (``serve(…, ssl=context)``); nothing here implements any of
it. The certificate is the user's own (``daemon.toml``'s ``tls_certificate`` and ``tls_key``) or, without one, a
self-signed one that :func:`ensure_certificate` makes on first start with the ``cryptography`` library (an EC
P-256 key, as Let's Encrypt and the CA/Browser Forum's baseline requirements allow; :data:`VALIDITY_DAYS`) and
keeps in the config folder (:data:`CERTIFICATE_FILE`, :data:`KEY_FILE`, both 0600), so its fingerprint stays the
same from one start to the next. Clients do not check it against any CA: they pin its SHA-256 fingerprint on first
contact (:mod:`client.connection`), as SSH pins a host key, which is why the daemon prints it at start.

``cryptography`` is imported only when a certificate is made, so a daemon on loopback starts without it.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import re
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from gimp_inpaint.protocol.fingerprint import certificate_fingerprint

from .config import ConfigError, Settings, make_private_folder, write_private

log = logging.getLogger(__name__)

CERTIFICATE_FILE = "tls-certificate.pem"
"""The self-signed certificate's file in the config folder (PEM)."""

KEY_FILE = "tls-key.pem"
"""Its private key's file in the config folder (PEM, PKCS #8, unencrypted; mode 0600)."""

VALIDITY_DAYS = 3650
"""How long a self-signed certificate is valid. A pinned certificate is trusted for its key, not its dates (the
client checks no dates), and a new one would need every client re-pinned, so it is made to outlast the install."""

_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
"""The first certificate of a PEM file: the server's own (a chain file lists the intermediates after it)."""


@dataclass(frozen=True)
class ServerTLS:
    """What the server needs to serve ``wss://``.

    Attributes:
        context: the server's context (TLS 1.2 or later), the certificate and key loaded.
        certificate: the certificate's file.
        fingerprint: the SHA-256 of its DER bytes (:func:`protocol.fingerprint.certificate_fingerprint`), which
            clients pin.
    """

    context: ssl.SSLContext
    certificate: Path
    fingerprint: str


def certificate_names(host: str) -> list[str]:
    """The names and addresses a self-signed certificate for a daemon bound to ``host`` lists (its subject
    alternative names): ``host`` itself unless it is a wildcard (``0.0.0.0``, ``::``, ``""``), this machine's host
    name (``socket.gethostname``) and the addresses it resolves to here (``socket.getaddrinfo``), then
    ``localhost``, ``127.0.0.1`` and ``::1``; each once, in that order.

    Clients pin the certificate rather than check these names; they tell a person which machine it belongs to.
    """
    names = [host] if host and not _is_wildcard(host) else []
    machine = socket.gethostname()
    names.append(machine)
    with contextlib.suppress(OSError):  # a host name that does not resolve here: its name alone
        names += [str(info[4][0]) for info in socket.getaddrinfo(machine, None, proto=socket.IPPROTO_TCP)]
    names += ["localhost", "127.0.0.1", "::1"]
    return list(dict.fromkeys(name.split("%")[0] for name in names if name))  # an IPv6 zone is no name


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def make_certificate(names: list[str]) -> tuple[bytes, bytes]:
    """A new self-signed server certificate for ``names`` and its key, both PEM: an EC P-256 key (SECP256R1), the
    certificate signed with it (ECDSA with SHA-256), valid from a day ago (clocks disagree) for
    :data:`VALIDITY_DAYS`, its subject ``CN=gimp-inpaint daemon on <the first name>``, ``names`` as subject
    alternative names (IP addresses as such, the rest as DNS names), not a CA, for server authentication.

    Returns:
        ``(certificate PEM, key PEM)``; the key as unencrypted PKCS #8.

    Raises:
        ConfigError: the ``cryptography`` library is not installed.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise ConfigError("serving wss:// needs a certificate, and making one needs the cryptography library: "
                          "`pip install cryptography` in the daemon's environment, or give tls_certificate and "
                          "tls_key of your own in daemon.toml") from None

    def san(name: str) -> x509.GeneralName:
        try:
            return x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            return x509.DNSName(name)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gimp-inpaint daemon on {names[0]}"[:64])])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName([san(name) for name in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_certificate(config_dir: Path, host: str) -> tuple[Path, Path]:
    """The self-signed certificate and key files in ``config_dir``, made first (:func:`make_certificate` for
    :func:`certificate_names` of ``host``) unless both exist: the key written before the certificate, each whole
    and 0600 (:func:`daemon.config.write_private`), so a start interrupted between them makes a new pair next time.

    Returns:
        ``(certificate file, key file)``.

    Raises:
        ConfigError: ``cryptography`` is missing.
        OSError: the files cannot be written.
    """
    certificate, key = config_dir / CERTIFICATE_FILE, config_dir / KEY_FILE
    if certificate.is_file() and key.is_file():
        return certificate, key
    make_private_folder(config_dir)
    names = certificate_names(host)
    certificate_pem, key_pem = make_certificate(names)
    write_private(key, key_pem)
    write_private(certificate, certificate_pem)
    log.info("made a self-signed TLS certificate for %s: %s (delete it and %s to make a new one; every client "
             "then has to pin it anew)", ", ".join(names), certificate, key.name)
    return certificate, key


def certificate_files(settings: Settings) -> tuple[Path, Path]:
    """The certificate and key files a daemon with ``settings`` serves ``wss://`` with: ``tls_certificate`` and
    ``tls_key`` (relative to the config folder unless absolute), else the self-signed pair :data:`CERTIFICATE_FILE`
    and :data:`KEY_FILE` of the config folder (which may not exist yet). Only builds paths."""
    folder = settings.config_dir
    if settings.tls_certificate:
        return folder / settings.tls_certificate, folder / settings.tls_key
    return folder / CERTIFICATE_FILE, folder / KEY_FILE


def file_fingerprint(certificate: Path) -> str:
    """The SHA-256 fingerprint (:func:`protocol.fingerprint.certificate_fingerprint`) of the first certificate of
    a PEM file: the server's own (a chain lists its intermediates after it).

    Raises:
        OSError: the file cannot be read.
        ValueError: it holds no PEM certificate.
    """
    match = _PEM_CERTIFICATE.search(certificate.read_text(encoding="ascii", errors="replace"))
    if match is None:
        raise ValueError(f"{certificate} holds no PEM certificate")
    return certificate_fingerprint(ssl.PEM_cert_to_DER_cert(match[0]))


def server_tls(settings: Settings) -> ServerTLS:
    """The TLS of a daemon with ``settings`` (:attr:`daemon.config.Settings.serves_tls`): the user's certificate
    (``tls_certificate`` and ``tls_key``, relative to the config folder unless absolute) or the self-signed one
    (:func:`ensure_certificate`), loaded into a server context that speaks TLS 1.2 or later and sends no TLS 1.3
    session tickets (``num_tickets = 0``). Clients never resume a session (each connection checks the whole
    certificate against its pin), and a ticket arrives after the handshake, just when websockets' threading client
    reads the socket on one thread and writes its HTTP upgrade on another. With tickets, about one run in ten of
    ``tests/test_remote.py`` on a loaded machine saw that upgrade never reach the daemon (it timed out the opening
    handshake after 10 s, the client read EOF); without them, none in 14 runs. The cause is our reading, not shown.

    Raises:
        ConfigError: a file is missing or unreadable, the certificate and key do not match, the key is encrypted,
            or ``cryptography`` is missing to make one; the message names the files and what to do.
    """
    own = bool(settings.tls_certificate)
    certificate, key = certificate_files(settings)
    try:
        if not own:
            ensure_certificate(settings.config_dir, settings.host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.num_tickets = 0  # no TLS 1.3 session tickets: see below
        context.load_cert_chain(certificate, key, password=_no_password)
        fingerprint = file_fingerprint(certificate)
    except (OSError, ssl.SSLError, ValueError) as exc:
        fix = ("check tls_certificate and tls_key in daemon.toml (PEM files, the key unencrypted)" if own else
               "delete both to let the daemon make new ones (every client then has to pin the new certificate)")
        raise ConfigError(f"cannot serve wss:// with the certificate {certificate} and the key {key}: {exc}; "
                          f"{fix}") from None
    log.info("TLS certificate %s, SHA-256 fingerprint %s", certificate, fingerprint)
    return ServerTLS(context, certificate, fingerprint)


def _no_password() -> bytes:
    """``load_cert_chain``'s password callback: an encrypted key is refused (ValueError) rather than asked for on
    the terminal, which a daemon started by the plug-in or a service does not have."""
    raise ValueError("the private key is encrypted; the daemon needs it unencrypted (mode 0600)")
