"""The URL (and, for ``wss://``, the certificate fingerprint) of the daemon configured on this machine, for the
command-line client and the installer.

Reads the daemon's own settings (:func:`daemon.config.load_settings`: ``daemon.toml`` in its
configuration folder), so it is not vendored into the GIMP plug-in, which gets its URL from
``connection.json`` instead.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from gimp_inpaint.daemon.config import CONFIG_FILE, ConfigError, load_settings
from gimp_inpaint.daemon.tls import certificate_files, file_fingerprint


def client_host(host: str) -> str:
    """The host a local client connects to for a daemon bound to ``host``, as written in a URL.

    A wildcard address (``0.0.0.0``, ``::``) becomes the loopback address of its family
    (``127.0.0.1``, ``::1``); IPv6 addresses are bracketed (RFC 3986); names are kept.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{address}]" if address.version == 6 else str(address)


def configured_url(config_dir: Path | None = None) -> str:
    """``ws://HOST:PORT`` of the daemon as ``<config_dir>/daemon.toml`` sets it up (defaults:
    ``127.0.0.1`` and port 7869, i.e. :data:`client.connection.DEFAULT_URL`), ``wss://`` when it serves TLS
    (:attr:`daemon.config.Settings.serves_tls`: a host other than loopback, or ``tls = true``). Only reads files.

    Args:
        config_dir: the daemon's configuration folder; None = its default
            (``platformdirs.user_config_dir("gimp-inpaint")``).

    Raises:
        daemon.config.ConfigError: ``daemon.toml`` is unreadable or invalid, or sets ``port = 0``
            (a port picked at each start, which no client can know in advance).
    """
    settings = load_settings(config_dir)
    if settings.port == 0:
        raise ConfigError(f"{settings.config_dir / CONFIG_FILE} sets port = 0 (any free port): give the daemon's "
                          f"URL explicitly with --url")
    scheme = "wss" if settings.serves_tls else "ws"
    return f"{scheme}://{client_host(settings.host)}:{settings.port}"


def configured_fingerprint(config_dir: Path | None = None) -> str | None:
    """The SHA-256 fingerprint of the certificate the daemon of ``<config_dir>`` serves ``wss://`` with, read from
    its own file (:func:`daemon.tls.certificate_files`): a pin checked through this machine's file system rather
    than trusted on first use. None when it serves plain ``ws://``, or has not made its certificate yet, or the
    file is unreadable (then the caller needs another pin). Only reads files.

    Raises:
        daemon.config.ConfigError: ``daemon.toml`` is unreadable or invalid.
    """
    settings = load_settings(config_dir)
    if not settings.serves_tls:
        return None
    try:
        return file_fingerprint(certificate_files(settings)[0])
    except (OSError, ValueError):
        return None
