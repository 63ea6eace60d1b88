"""A TLS certificate's SHA-256 fingerprint: what the daemon prints when it serves ``wss://`` and what a client pins
in ``connection.json`` (``client.connection``), one spelling for both.

The spelling is OpenSSL's (``openssl x509 -noout -fingerprint -sha256 -in certificate.pem`` prints
``sha256 Fingerprint=`` and then the same text), so a user can check a pin against the certificate file itself.
"""

from __future__ import annotations

import hashlib
import re

FINGERPRINT_BYTES = 32
"""Bytes of a SHA-256 digest."""

_PREFIX = re.compile(r"(?i)^\s*(?:sha-?256)?(?:\s*fingerprint)?\s*[=:]?\s*")
"""A label before the digits that :func:`normalize_fingerprint` drops: ``SHA256:``, ``sha256 Fingerprint=``."""


def certificate_fingerprint(der: bytes) -> str:
    """The SHA-256 of a certificate's DER bytes as 32 upper-case hex pairs joined by colons (95 characters),
    e.g. ``"3F:A0:…:9C"``: OpenSSL's spelling.

    Args:
        der: the certificate, DER-encoded (``ssl.SSLSocket.getpeercert(binary_form=True)``,
            ``ssl.PEM_cert_to_DER_cert``).
    """
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def normalize_fingerprint(text: str) -> str:
    """``text`` in :func:`certificate_fingerprint`'s spelling: a label such as ``SHA256:`` or ``sha256
    Fingerprint=`` dropped, colons and white space ignored, hex digits of either case.

    Raises:
        ValueError: what is left is not 64 hex digits (32 bytes); the message says what a fingerprint looks like.
    """
    digits = re.sub(r"[\s:]", "", _PREFIX.sub("", text, count=1))
    if not re.fullmatch(f"[0-9A-Fa-f]{{{2 * FINGERPRINT_BYTES}}}", digits):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint: 32 hex pairs such as 3F:A0:…:9C, as the daemon "
                         "prints it when it starts")
    digits = digits.upper()
    return ":".join(digits[index:index + 2] for index in range(0, len(digits), 2))
