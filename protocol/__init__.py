"""The gimp-inpaint wire protocol: typed messages, the fill options and their table, their msgpack codec, error
codes and crop geometry.

Imported by the daemon, the command-line client and the GIMP plug-in (vendored there), so it
depends on nothing but the standard library and ``msgpack``.

The names below are imported from their modules on first use (PEP 562, :func:`__getattr__`), so that
``from gimp_inpaint.protocol import FILL_OPTIONS`` loads the options table without the codec and msgpack
(``gimp-inpaint --help`` stays fast); ``from gimp_inpaint.protocol import X`` works for every name of
:data:`__all__` as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .codec import DEFAULT_MAX_PIXELS, decode, encode, max_frame_bytes, peek_job_id
    from .enums import Family, FillMode, Scheduler, Stage, WireEnum
    from .errors import ErrorCode, ProtocolError
    from .geometry import (
        CANVAS_SIDES,
        LATENT_MULTIPLE,
        MAX_CANVAS_SIDE,
        CanvasExpansion,
        Rect,
        context_crop,
        expand_canvas,
        expand_to_aspect,
        expand_to_size,
        feather_reach,
    )
    from .messages import (
        DEFAULT_PREVIEW_EVERY,
        DEFAULT_PREVIEW_SIZE,
        MAX_PREVIEW_EVERY,
        MAX_PREVIEW_SIZE,
        MIN_PREVIEW_SIZE,
        PROTOCOL_VERSION,
        Accepted,
        Cancel,
        EngineInfo,
        Error,
        Hello,
        InpaintRequest,
        Message,
        Plane,
        Preview,
        Progress,
        Result,
        Variant,
        Welcome,
        preview_dimensions,
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
        resolve_fill_mode,
    )
    from .quoting import quote

_MODULES = {
    "codec": ("DEFAULT_MAX_PIXELS", "decode", "encode", "max_frame_bytes", "peek_job_id"),
    "enums": ("Family", "FillMode", "Scheduler", "Stage", "WireEnum"),
    "errors": ("ErrorCode", "ProtocolError"),
    "geometry": ("CANVAS_SIDES", "LATENT_MULTIPLE", "MAX_CANVAS_SIDE", "CanvasExpansion", "Rect", "context_crop",
                 "expand_canvas", "expand_to_aspect", "expand_to_size", "feather_reach"),
    "messages": ("DEFAULT_PREVIEW_EVERY", "DEFAULT_PREVIEW_SIZE", "MAX_PREVIEW_EVERY", "MAX_PREVIEW_SIZE",
                 "MIN_PREVIEW_SIZE", "PROTOCOL_VERSION", "Accepted", "Cancel", "EngineInfo", "Error", "Hello",
                 "InpaintRequest", "Message", "Plane", "Preview", "Progress", "Result", "Variant", "Welcome",
                 "preview_dimensions"),
    "options": ("EDITOR_OPTIONS", "FILL_OPTIONS", "MAX_LORAS", "MAX_VARIANTS", "SEED_MAX", "EditorOptions",
                "FillOptions", "OptionSpec", "format_loras", "parse_loras", "resolve_fill_mode"),
    "quoting": ("quote",),
}
"""Module (of this package) → the names this package exports from it (the ``TYPE_CHECKING`` imports above)."""

_HOME = {name: module for module, names in _MODULES.items() for name in names}
"""Exported name → its module."""

__all__ = [
    "CANVAS_SIDES", "DEFAULT_MAX_PIXELS", "DEFAULT_PREVIEW_EVERY", "DEFAULT_PREVIEW_SIZE", "EDITOR_OPTIONS",
    "FILL_OPTIONS", "LATENT_MULTIPLE", "MAX_CANVAS_SIDE", "MAX_LORAS", "MAX_PREVIEW_EVERY", "MAX_PREVIEW_SIZE",
    "MAX_VARIANTS", "MIN_PREVIEW_SIZE", "PROTOCOL_VERSION", "SEED_MAX", "Accepted", "Cancel", "CanvasExpansion",
    "EditorOptions", "EngineInfo", "Error", "ErrorCode", "Family", "FillMode", "FillOptions", "Hello",
    "InpaintRequest", "Message", "OptionSpec", "Plane", "Preview", "Progress", "ProtocolError", "Rect", "Result",
    "Scheduler", "Stage", "Variant", "Welcome", "WireEnum", "context_crop", "decode", "encode", "expand_canvas",
    "expand_to_aspect", "expand_to_size", "feather_reach", "format_loras", "max_frame_bytes", "parse_loras",
    "peek_job_id", "preview_dimensions", "quote", "resolve_fill_mode",
]


if not TYPE_CHECKING:  # type checkers see the imports above, and no catch-all that would hide a misspelt name

    def __getattr__(name: str) -> Any:
        """An exported name, imported from its module on first use and then kept in this module's namespace."""
        module = _HOME.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
