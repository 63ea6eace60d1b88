"""Named tokens: one per person or machine allowed to use a daemon beyond this one, each revocable.

``gimp-inpaint-daemon token add NAME`` makes one (``secrets.token_hex(32)``, printed once), ``token list`` names
them, ``token revoke NAME`` deletes one. They live in :data:`TOKENS_FILE` in the config folder (JSON, mode 0600)
as SHA-256 digests, never as the tokens themselves: a copy of the file (a backup, a leaked volume) lets nobody in.

Why SHA-256 and not a slow password hash (scrypt, Argon2): a token is 32 random bytes, so there is nothing to
guess; a slow hash buys time against guessing low-entropy passwords only, and would cost every handshake, before
authentication, tens of milliseconds of CPU that anyone who can connect could make the daemon spend. Digests are
compared with ``hmac.compare_digest``, each one, whichever matches.

The local token (:data:`daemon.config.TOKEN_FILE`, the plug-in's on this machine) keeps working as the owner
:data:`LOCAL_OWNER`. The server asks :class:`TokenBook` at every handshake, and the book reads the file again
whenever it changed (a revocation needs no restart: the next handshake with that token is refused; connections
already open stay until they close).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, make_private_folder, open_private, write_private

log = logging.getLogger(__name__)

TOKENS_FILE = "tokens.json"
"""The named tokens' file in the config folder: ``{"tokens": [{"name", "sha256", "created"}, …]}``."""

LOCAL_OWNER = "local"
"""The owner name of the local token (the ``token`` file), reserved: no named token may take it."""

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A token's name: 1 to 64 letters, digits, ``.``, ``_`` or ``-``, a letter or digit first (it is logged and
printed, so nothing that could pass for another log field)."""


class TokenError(ValueError):
    """A token command cannot do what it was asked (a name taken, unknown or malformed); the message says so."""


@dataclass(frozen=True)
class NamedToken:
    """One entry of :data:`TOKENS_FILE`.

    Attributes:
        name: its owner's name (:data:`NAME_PATTERN`).
        sha256: the SHA-256 of the token's UTF-8 bytes, 64 lower-case hex digits (:func:`token_digest`).
        created: when it was made, ISO 8601 in UTC to the second.
    """

    name: str
    sha256: str
    created: str


def token_digest(token: str) -> str:
    """The SHA-256 of ``token``'s UTF-8 bytes as 64 lower-case hex digits (the module's docstring says why)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def read_tokens(config_dir: Path) -> list[NamedToken]:
    """The named tokens of ``config_dir``, oldest first; none when :data:`TOKENS_FILE` does not exist.

    Raises:
        ConfigError: the file is unreadable or not what :func:`write_tokens` writes (the message names it).
    """
    path = config_dir / TOKENS_FILE
    try:
        with open(path, encoding="utf-8", opener=open_private) as file:
            data = json.load(file)
        entries = data["tokens"]
        tokens = [NamedToken(entry["name"], entry["sha256"], entry["created"]) for entry in entries]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: cannot read the named tokens ({type(exc).__name__}: {exc}); fix or delete the "
                          "file (deleting it revokes every named token)") from None
    for token in tokens:
        if not all(isinstance(value, str) for value in (token.name, token.sha256, token.created)) or \
                not re.fullmatch(r"[0-9a-f]{64}", token.sha256):
            raise ConfigError(f"{path}: the entry {token.name!r} is not a name, a SHA-256 and a date; fix or delete "
                              "the file (deleting it revokes every named token)")
    return tokens


def write_tokens(config_dir: Path, tokens: list[NamedToken]) -> None:
    """Replace :data:`TOKENS_FILE` with ``tokens`` (whole and 0600: :func:`daemon.config.write_private`).

    Raises:
        OSError: it cannot be written.
    """
    make_private_folder(config_dir)
    data = {"tokens": [{"name": token.name, "sha256": token.sha256, "created": token.created} for token in tokens]}
    write_private(config_dir / TOKENS_FILE, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def add_token(config_dir: Path, name: str) -> str:
    """Make a token for ``name``, store its digest and return it: the only time the token itself is seen.

    Raises:
        TokenError: ``name`` is malformed (:data:`NAME_PATTERN`), :data:`LOCAL_OWNER`, or taken.
        ConfigError: the tokens' file is unreadable.
        OSError: it cannot be written.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise TokenError(f"{name!r} is not a token name: 1 to 64 letters, digits, '.', '_' or '-', a letter or "
                         "digit first")
    if name == LOCAL_OWNER:
        raise TokenError(f"{LOCAL_OWNER!r} is the local token's name (the token file); pick another")
    tokens = read_tokens(config_dir)
    if any(token.name == name for token in tokens):
        raise TokenError(f"there is a token named {name!r} already: `token revoke {name}` first to replace it")
    token = secrets.token_hex(32)
    created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    write_tokens(config_dir, [*tokens, NamedToken(name, token_digest(token), created)])
    return token


def revoke_token(config_dir: Path, name: str) -> None:
    """Delete the token ``name``: the daemon refuses it at its next handshake.

    Raises:
        TokenError: there is no token of that name (:data:`LOCAL_OWNER` included: the local token is the token
            file's, and deleting that file makes a new one at the next start).
        ConfigError: the tokens' file is unreadable.
        OSError: it cannot be written.
    """
    tokens = read_tokens(config_dir)
    kept = [token for token in tokens if token.name != name]
    if len(kept) == len(tokens):
        known = ", ".join(token.name for token in tokens) or "none"
        hint = " (the local token is the token file: delete it and restart the daemon for a new one)" \
            if name == LOCAL_OWNER else ""
        raise TokenError(f"no token is named {name!r}{hint}; the named tokens: {known}")
    write_tokens(config_dir, kept)


class TokenBook:
    """Who a presented token belongs to: the local token's owner :data:`LOCAL_OWNER`, a named token's name, or
    nobody. Reads :data:`TOKENS_FILE` again whenever its inode, size or modification time changed (a revocation
    written by another process counts at the next handshake).

    Args:
        config_dir: the folder of :data:`TOKENS_FILE`.
        local_token: the token file's token (:func:`daemon.config.ensure_token`).
    """

    def __init__(self, config_dir: Path, local_token: str) -> None:
        self._path = config_dir / TOKENS_FILE
        self._local = token_digest(local_token)
        self._seen: tuple[int, int, int] | None = None
        self._named: list[NamedToken] = []

    def _current(self) -> list[NamedToken]:
        """The named tokens as the file holds them now. An unreadable file is logged and trusts no named token
        (fails closed) until it is fixed."""
        try:
            status = os.stat(self._path)
            seen = (status.st_ino, status.st_size, status.st_mtime_ns)
        except FileNotFoundError:
            seen = (0, 0, 0)
        if seen != self._seen:
            try:
                self._named = read_tokens(self._path.parent)
            except ConfigError as exc:
                log.error("%s; only the local token is accepted meanwhile", exc)
                self._named = []
            self._seen = seen
        return self._named

    def owner(self, presented: str) -> str | None:
        """The owner of ``presented``, or None when it is no token of this daemon (every digest compared in
        constant time, ``hmac.compare_digest``)."""
        digest = token_digest(presented)
        owner = LOCAL_OWNER if hmac.compare_digest(self._local, digest) else None
        for token in self._current():
            if hmac.compare_digest(token.sha256, digest):
                owner = owner or token.name
        return owner
