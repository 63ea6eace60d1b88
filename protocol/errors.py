"""Error codes shared by the daemon and its clients, and the one exception type of the protocol."""

from __future__ import annotations

from .enums import WireEnum


class ErrorCode(WireEnum):
    """Stable, machine-readable error codes. The string values travel on the wire and never change."""

    BAD_MESSAGE = "bad_message"
    """The frame is not a valid message: not msgpack, wrong types, unknown or missing fields."""
    VERSION_MISMATCH = "version_mismatch"
    """The client speaks a protocol version the daemon does not."""
    UNAUTHORIZED = "unauthorized"
    """Missing or wrong token, or a browser ``Origin`` header."""
    TOO_LARGE = "too_large"
    """An image exceeds the daemon's pixel limit, or a frame its byte limit."""
    INVALID_REQUEST = "invalid_request"
    """Well-formed but unusable values: strength out of range, mask size ≠ image size, …"""
    UNKNOWN_ENGINE = "unknown_engine"
    """The request names an engine the daemon does not have."""
    INCOMPATIBLE = "incompatible"
    """The request's options do not fit the engine's model: a LoRA made for another family, a refiner or a
    ControlNet scale where the model has none, a scheduler the model cannot use."""
    ENGINE_UNAVAILABLE = "engine_unavailable"
    """The engine exists but its model could not be loaded (offline, missing, broken)."""
    CANCELLED = "cancelled"
    """The job was cancelled by a client."""
    OUT_OF_MEMORY = "out_of_memory"
    """The device ran out of memory during the job."""
    JOB_FAILED = "job_failed"
    """The engine raised while running the job."""
    BUSY = "busy"
    """The daemon is at one of its limits: open connections, connections still handshaking, or jobs waiting on
    this connection (``docs/limits.md``); the message says which and what to do. Trying again later can work."""
    PAUSED = "paused"
    """The daemon was paused from its tray menu: it refuses new jobs (the running and queued ones finish) until
    Resume is chosen there."""
    INTERNAL = "internal"
    """A bug in the daemon; the message says what happened."""


class ProtocolError(Exception):
    """Raised for every protocol-level failure; carries a stable :class:`ErrorCode` and a human message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
