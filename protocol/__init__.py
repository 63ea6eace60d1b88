"""The gimp-inpaint wire protocol: typed messages, the fill options and their table, their msgpack codec, error
codes and crop geometry.

Imported by the daemon, the command-line client and the GIMP plug-in (vendored there), so it
depends on nothing but the standard library and ``msgpack``.
"""

from .codec import DEFAULT_MAX_PIXELS, decode, encode, max_frame_bytes, peek_job_id
from .enums import Family, Scheduler, Stage, WireEnum
from .errors import ErrorCode, ProtocolError
from .geometry import LATENT_MULTIPLE, Rect, context_crop, feather_reach
from .messages import (
    PROTOCOL_VERSION,
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
from .options import (
    EDITOR_OPTIONS,
    FILL_OPTIONS,
    MAX_LORAS,
    MAX_VARIANTS,
    SEED_MAX,
    EditorOptions,
    FillOptions,
    OptionSpec,
    format_loras,
    parse_loras,
)
from .quoting import quote

__all__ = [
    "DEFAULT_MAX_PIXELS", "EDITOR_OPTIONS", "FILL_OPTIONS", "LATENT_MULTIPLE", "MAX_LORAS", "MAX_VARIANTS",
    "PROTOCOL_VERSION", "SEED_MAX", "Accepted", "Cancel", "EditorOptions", "EngineInfo", "Error", "ErrorCode",
    "Family", "FillOptions", "Hello", "InpaintRequest", "Message", "OptionSpec", "Plane", "Progress",
    "ProtocolError", "Rect", "Result", "Scheduler", "Stage", "Variant", "Welcome", "WireEnum", "context_crop",
    "decode", "encode", "feather_reach", "format_loras", "max_frame_bytes", "parse_loras", "peek_job_id", "quote",
]
