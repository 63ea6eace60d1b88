"""The URL of the daemon configured on this machine, for the command-line client and the installer.

Reads the daemon's own settings (:func:`daemon.config.load_settings`: ``daemon.toml`` in its
configuration folder), so it is not vendored into the GIMP plug-in, which gets its URL from
``connection.json`` instead.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from gimp_inpaint.daemon.config import CONFIG_FILE, ConfigError, load_settings


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
    ``127.0.0.1`` and port 7869, i.e. :data:`client.connection.DEFAULT_URL`). Only reads files.

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
    return f"ws://{client_host(settings.host)}:{settings.port}"
