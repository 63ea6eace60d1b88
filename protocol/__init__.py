"""The gimp-inpaint wire protocol: typed messages, their msgpack codec, error codes and crop geometry.

Imported by the daemon, the command-line client and the GIMP plug-in (vendored there), so it
depends on nothing but the standard library and ``msgpack``.
"""

from .codec import DEFAULT_MAX_PIXELS, decode, encode, max_frame_bytes, peek_job_id
from .errors import ErrorCode, ProtocolError
from .geometry import LATENT_MULTIPLE, Rect, context_crop, feather_reach
from .messages import (
    MAX_LORAS,
    MAX_VARIANTS,
    PROGRESS_STAGES,
    PROTOCOL_VERSION,
    SCHEDULERS,
    Accepted,
    Cancel,
    EngineInfo,
    Error,
    Hello,
    InpaintRequest,
    Message,
    Plane,
    Progress,
    Result,
    Variant,
    Welcome,
)
from .quoting import quote

__all__ = [
    "DEFAULT_MAX_PIXELS", "LATENT_MULTIPLE", "MAX_LORAS", "MAX_VARIANTS", "PROGRESS_STAGES", "PROTOCOL_VERSION",
    "SCHEDULERS", "Accepted", "Cancel", "EngineInfo",
    "Error", "ErrorCode", "Hello", "InpaintRequest", "Message", "Plane", "Progress", "ProtocolError", "Rect", "Result",
    "Variant", "Welcome", "context_crop", "decode", "encode", "feather_reach", "max_frame_bytes", "peek_job_id",
    "quote",
]
