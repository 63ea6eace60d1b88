"""msgpack encoding of :mod:`protocol.messages`, with validation on decode.

Wire form of a message: a msgpack map ``{"type": <Message.type>, <field>: <value>, …}``; nested
dataclasses are maps, ``bytes`` are msgpack ``bin``. :func:`decode` never lets a malformed,
truncated, oversized or inconsistent frame through: it raises :class:`ProtocolError` with
``BAD_MESSAGE``, ``TOO_LARGE`` or ``INVALID_REQUEST`` instead.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from enum import Enum
from typing import Any

import msgpack

from .errors import ErrorCode, ProtocolError
from .messages import MAX_JOB_ID_CHARS, MESSAGE_TYPES, Message, Plane
from .options import MAX_ENGINE_NAME_CHARS, MAX_LORAS, MAX_PROMPT_CHARS, EditorOptions, FillOptions
from .quoting import quote

DEFAULT_MAX_PIXELS = 4096 * 4096
"""Default pixel limit (width × height) of one image: 16.8 Mpx, a 4096² crop."""

_UTF8_BYTES_PER_CHAR = 4
"""Most bytes one character takes in UTF-8 (RFC 3629), which msgpack strings use."""

_FRAME_OVERHEAD = (_UTF8_BYTES_PER_CHAR * (2 * MAX_PROMPT_CHARS + MAX_JOB_ID_CHARS
                                          + (1 + MAX_LORAS) * MAX_ENGINE_NAME_CHARS) + 16 * 1024)
"""Bytes allowed beyond the pixel payload (53 KiB): the longest prompt, negative prompt, job id, engine name and
LoRA names a request may carry (:mod:`protocol.messages` caps them in characters, 4 UTF-8 bytes each), plus 16 KiB
for field
names, numbers, msgpack headers and the per-variant seeds and timings of a result (about 200 bytes a variant)."""


MAX_DEPTH = 4
"""Most levels of nested maps and arrays in a message: a welcome's map → engines → an engine's map → its LoRA
names (a request's map → its options → their LoRAs, a variant's map → a plane, are 3)."""

MAX_OBJECTS = 1 << 14
"""Most msgpack objects (keys, values and containers, the message itself included) one frame may hold: a request
holds about 80, a variant about 40; the rest is room for a welcome listing many engines, LoRAs and
embeddings. :func:`decode` counts them by their headers before it builds any, so a frame of a million empty
arrays costs microseconds, not the ~60 bytes of memory per byte sent that building them would."""

MAX_STR_BYTES = 1 << 16
"""Longest msgpack str (bytes) of a message: 4 × the longest prompt in UTF-8 (4 bytes a character), room enough
for an engine's ``detail`` text in a welcome."""

MAX_ARRAY_LEN = 1024
"""Longest msgpack array of a message: a welcome's engines and each engine's LoRA and embedding names (a result
is a count, not an array)."""

MAX_MAP_LEN = 64
"""Largest msgpack map of a frame. The largest valid map has 14 entries (a request's options); the rest lets
:func:`decode` name the unknown fields of a newer client's request instead of refusing its map by size."""


MAX_BYTES_PER_PIXEL = 4 * 2 + 1
"""Most bytes a pixel of a request or variant takes: a 16-bit RGBA sample (2 bytes) for each of 4 channels and the
8-bit mask's byte (an 8-bit crop takes 5)."""


def max_frame_bytes(max_pixels: int) -> int:
    """Largest frame (bytes) carrying one RGBA image and its mask of ``max_pixels`` pixels: the image at 16 bits
    (:attr:`protocol.Plane.bits`), :data:`MAX_BYTES_PER_PIXEL` (9) bytes a pixel, for a crop of an image deeper than
    8 bits; an 8-bit crop's frame is at most 5 bytes a pixel plus the same overhead.

    Every valid request whose planes have at most ``max_pixels`` pixels encodes to at most this many bytes, and so
    does every :class:`protocol.Variant` of such a request (a variant is one image and one mask, at most the
    crop's size), so it is the client's ``max_size`` too. The daemon reads frames somewhat larger than this
    (:data:`daemon.server.FRAME_MARGIN`) so that it can answer a request over its pixel limit with ``TOO_LARGE``
    instead of closing the connection.
    """
    return max_pixels * MAX_BYTES_PER_PIXEL + _FRAME_OVERHEAD


def _to_wire(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_wire(v) for k, v in value.items()}
    if isinstance(value, Enum):
        return value.value
    return value


JOINED_BIN_BYTES = 1 << 16
"""Smallest ``bytes`` value (a plane's data) that :func:`encode` puts into the frame as it is, after a bin header it
writes itself, instead of handing it to msgpack."""


def _bin_header(length: int) -> bytes:
    """The msgpack header of a bin of ``length`` bytes (bin 8, 16 or 32: the shortest, as msgpack writes it)."""
    for type_byte, width in ((b"\xc4", 1), (b"\xc5", 2), (b"\xc6", 4)):
        if length < 1 << 8 * width:
            return type_byte + length.to_bytes(width, "big")
    raise ValueError("bytes object is too large")  # msgpack's words; a plane is at most 1 GiB


def _chunks(value: Any, packer: msgpack.Packer, out: list[bytes | memoryview]) -> None:
    """Append the msgpack bytes of ``value`` to ``out`` in pieces: maps and arrays item by item, a bin of at least
    :data:`JOINED_BIN_BYTES` (``bytes``, or a 1-D ``memoryview`` of bytes, as :func:`decode` with ``views`` and the
    daemon's worker make) as its header and the object itself, anything else as ``packer`` packs it."""
    if isinstance(value, dict):
        out.append(packer.pack_map_header(len(value)))
        for key, item in value.items():
            out.append(packer.pack(key))
            _chunks(item, packer, out)
    elif isinstance(value, list):
        out.append(packer.pack_array_header(len(value)))
        for item in value:
            _chunks(item, packer, out)
    elif (type(value) is bytes or (type(value) is memoryview and value.format == "B" and value.ndim == 1)) and \
            len(value) >= JOINED_BIN_BYTES:
        out += (_bin_header(len(value)), value)
    else:
        out.append(packer.pack(value))


FRAGMENT_BYTES = 1 << 20
"""Largest WebSocket fragment (bytes) of a message sent by :func:`encode_fragments`: websockets frames, masks and
writes one fragment per event-loop turn and awaits the socket's drain between them, so a 4096² variant (84 MB)
holds the daemon's event loop for one MiB's copy at a time instead of the whole message's (issue 10's stall)."""


def _pieces(message: Message) -> list[bytes | memoryview]:
    """The msgpack pieces of ``message`` (:func:`_chunks`): joined, the bytes of ``packb(wire, use_bin_type=True)``."""
    wire = _to_wire(message)
    wire["type"] = message.type
    out: list[bytes | memoryview] = []
    _chunks(wire, msgpack.Packer(use_bin_type=True, buf_size=4096), out)
    return out


def encode(message: Message) -> bytes:
    """Serialise a message to one binary WebSocket frame: the bytes of ``msgpack.packb(wire, use_bin_type=True)``.

    The planes are copied once, by one ``bytes.join`` of the msgpack pieces around them (:func:`_chunks`), where
    ``packb`` copies them into its growing buffer and then into its result: a 2048² variant takes 0.1× packb's time
    (0.3× with the daemon's fixed mmap threshold, page faults included). ``join`` also releases the GIL while it
    copies more than a MiB of ``bytes`` objects, which ``packb`` never does: a 4096² variant packed on the worker
    thread holds the event loop about 7 ms instead of 105 ms. (A plane whose data is a ``memoryview`` of another
    shape than 1-D bytes goes to msgpack: copied with the GIL held.)
    """
    return b"".join(_pieces(message))


def encode_fragments(message: Message, fragment_bytes: int = FRAGMENT_BYTES) -> list[bytes | memoryview]:
    """Serialise a message as the fragments of one binary WebSocket message (RFC 6455 section 5.4), for
    ``websocket.send(fragments)``; joined, they are :func:`encode`'s bytes, and the receiver's ``recv`` gives those.

    Each fragment is at most ``fragment_bytes`` long (or one msgpack piece under :data:`JOINED_BIN_BYTES`, when
    that is longer): the small pieces between planes are joined, and a plane is sent as read-only ``memoryview``
    slices of its own ``bytes``, so nothing of the planes is copied here
    (:func:`encode` copies each once, into its frame). The fragments keep the message's planes alive until they are
    sent.

    Raises:
        ValueError: ``fragment_bytes`` < 1.
    """
    if fragment_bytes < 1:
        raise ValueError(f"fragment_bytes must be ≥ 1, got {fragment_bytes}")
    fragments: list[bytes | memoryview] = []
    small: list[bytes | memoryview] = []
    pending = 0  # bytes in small
    for piece in _pieces(message):
        if small and (len(piece) >= JOINED_BIN_BYTES or pending + len(piece) > fragment_bytes):
            fragments.append(b"".join(small))
            small, pending = [], 0
        if len(piece) < JOINED_BIN_BYTES:
            small.append(piece)
            pending += len(piece)
        else:
            view = memoryview(piece).toreadonly()
            fragments += (view[at:at + fragment_bytes] for at in range(0, len(view), fragment_bytes))
    if small:
        fragments.append(b"".join(small))
    return fragments


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_MESSAGE, message)


def _convert(value: Any, hint: Any, where: str, max_pixels: int) -> Any:
    """Check ``value`` against the type ``hint`` and build dataclasses; raise BAD_MESSAGE on mismatch."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return _convert(value, bytes if inner == [bytes, memoryview] else inner[0], where, max_pixels)
    if origin is list:
        if not isinstance(value, list):
            raise _bad(f"{where} must be an array")
        (inner,) = typing.get_args(hint)
        return [_convert(v, inner, f"{where}[{i}]", max_pixels) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(f"{where} must be a map")
        key_type, value_type = typing.get_args(hint)
        return {_convert(k, key_type, f"{where} key", max_pixels):
                _convert(v, value_type, f"{where}[{quote(k)}]", max_pixels) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _bad(f"{where} must be a map")
        return _build(hint, value, where, max_pixels)
    if isinstance(hint, type) and issubclass(hint, Enum):
        if not isinstance(value, str):
            raise _bad(f"{where} must be a string")
        try:
            return hint(value)
        except ValueError:
            raise _bad(f"{where} {quote(value)} is not one of {', '.join(m.value for m in hint)}") from None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(f"{where} must be a number")
        return float(value)
    if hint is int and isinstance(value, bool):
        raise _bad(f"{where} must be an integer")
    if isinstance(value, memoryview):  # a bin that decode(views=True) did not copy
        if hint is bytes:
            return value
        raise _bad(f"{where} must be of type {hint.__name__}, got bytes")
    if not isinstance(value, hint):
        raise _bad(f"{where} must be of type {hint.__name__}, got {type(value).__name__}")
    return value


@functools.cache
def _fields(cls: Any) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """A message dataclass's field types, as :func:`_convert` checks them, and its fields, by name (once per class:
    ``typing.get_type_hints`` evaluates the annotations' strings, most of a small message's decoding)."""
    hints = typing.get_type_hints(cls)
    if cls in _RECORDS:  # a record checks its own values, INVALID_REQUEST for a bad one (a string for an enum too)
        hints = {name: str if isinstance(hint, type) and issubclass(hint, Enum) else hint
                 for name, hint in hints.items()}
    return hints, {f.name: f for f in dataclasses.fields(cls)}


def _build(cls: Any, wire: dict[Any, Any], where: str, max_pixels: int) -> Any:
    hints, fields = _fields(cls)
    unknown = set(wire) - set(fields)
    if unknown:
        raise _bad(f"{where} has unknown fields {quote(sorted(unknown, key=str))}")
    missing = [name for name, f in fields.items() if name not in wire
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise _bad(f"{where} lacks fields {missing}")
    if cls is Plane:
        width, height = wire.get("width"), wire.get("height")
        if isinstance(width, int) and isinstance(height, int) and width * height > max_pixels:
            raise ProtocolError(ErrorCode.TOO_LARGE,
                                f"{where} has {width}×{height} pixels; this daemon's limit is {max_pixels}")
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}", max_pixels) for name, value in wire.items()}
    return cls(**kwargs)


_RECORDS = (FillOptions, EditorOptions)
"""The options records (:mod:`protocol.options`): their table checks each value, so the codec checks only that
each is of a wire type (an enum's value as a string) and leaves the rest to the record."""


_UNPACK_LIMITS: dict[str, Any] = {
    "raw": False, "strict_map_key": True, "use_list": True, "max_str_len": MAX_STR_BYTES,
    "max_array_len": MAX_ARRAY_LEN, "max_map_len": MAX_MAP_LEN, "max_ext_len": 0,
}
"""``msgpack.unpackb``'s arguments in :func:`decode`; a bin is at most the frame's length (unpackb's default): bytes
sent, not amplified."""

VIEW_BIN_BYTES = 1 << 16
"""Smallest bin that ``decode(views=True)`` gives as a view of the frame, and smallest map or array that it walks
itself (:func:`_unpack_viewing_bins`) rather than handing to msgpack whole."""


def _unpack_viewing_bins(data: memoryview, at: int) -> tuple[Any, int]:
    """The msgpack object at offset ``at`` of a frame that :func:`_skip` walked whole, and the offset after it.

    The object is what ``msgpack.unpackb(…, **_UNPACK_LIMITS)`` builds, with the same limits and errors, except
    that a bin of at least :data:`VIEW_BIN_BYTES` is ``data``'s slice there: a memoryview, not a copy. Maps and
    arrays that span that many bytes are built here, item by item (a map's keys always by msgpack); any other
    object is msgpack's, from its own bytes.

    Raises:
        ValueError, TypeError and msgpack's errors: as ``msgpack.unpackb``.
    """
    kind, start, end, contained = _object(data, at)
    if kind == "bin" and end - start >= VIEW_BIN_BYTES:
        return data[start:end], end
    after, _ = _skip(data, at, MAX_OBJECTS)
    if kind not in ("map", "array") or after - at < VIEW_BIN_BYTES:
        return msgpack.unpackb(data[at:after], **_UNPACK_LIMITS), after
    at = end
    if kind == "array":
        if contained > MAX_ARRAY_LEN:
            raise ValueError(f"{contained} exceeds max_array_len({MAX_ARRAY_LEN})")  # msgpack's words
        items = []
        for _ in range(contained):
            item, at = _unpack_viewing_bins(data, at)
            items.append(item)
        return items, at
    if contained // 2 > MAX_MAP_LEN:
        raise ValueError(f"{contained // 2} exceeds max_map_len({MAX_MAP_LEN})")
    entries: dict[Any, Any] = {}
    for _ in range(contained // 2):
        key_end, _ = _skip(data, at, MAX_OBJECTS)
        key = msgpack.unpackb(data[at:key_end], **_UNPACK_LIMITS)
        value, at = _unpack_viewing_bins(data, key_end)
        if type(key) not in (str, bytes):  # strict_map_key, checked as msgpack does: once the value is built
            raise ValueError(f"{type(key).__name__} is not allowed for map key when strict_map_key=True")
        entries[key] = value
    return entries, at


def decode(frame: bytes | memoryview | str, max_pixels: int = DEFAULT_MAX_PIXELS, *, views: bool = False) -> Message:
    """Parse and validate one frame.

    Args:
        frame: one WebSocket frame: the bytes of a binary frame as websockets receives it, or a read-only
            ``memoryview`` of them (the daemon's frame of several fragments); a text frame's ``str`` is refused with
            ``BAD_MESSAGE``.
        max_pixels: largest ``width × height`` accepted for any :class:`Plane`.
        views: when ``frame`` is ``bytes`` or a read-only ``memoryview`` (whose owner promises not to change it),
            each plane's data of at least :data:`VIEW_BIN_BYTES` is a read-only ``memoryview`` of the frame rather
            than a copy, so that decoding a 4096² request takes well
            under a millisecond instead of 50 ms of copying with the GIL held, and its planes share the frame's
            memory (which they keep alive). A view is bytes-like, not ``bytes``: it compares equal to the same bytes,
            and ``len``, ``np.frombuffer`` and :func:`encode` take it, but it is no ``bytes`` instance (the daemon
            reads its requests so; a client that hands a variant's data to other libraries decodes copies). Every
            check is the same either way.

    Returns:
        The message dataclass named by the frame's ``"type"``.

    Raises:
        ProtocolError: ``BAD_MESSAGE`` for anything that is not a well-typed message (not msgpack,
            truncated, trailing bytes, unknown type or fields, wrong types, more than :data:`MAX_OBJECTS`
            objects, nesting deeper than :data:`MAX_DEPTH`, a str, bin, array or map longer than a message's
            can be); ``TOO_LARGE`` for a plane over ``max_pixels``; ``INVALID_REQUEST``
            for values out of range or inconsistent sizes.
    """
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise _bad("frames must be binary")
    try:
        data = memoryview(frame).cast("B")
        end, _ = _skip(data, 0, MAX_OBJECTS, MAX_DEPTH)  # before any object is built
        if views and (type(frame) is bytes or (isinstance(frame, memoryview) and frame.readonly)):
            # (a mutable frame's views could change under the message)
            wire, _ = _unpack_viewing_bins(data, 0)
            if end != len(data):
                raise ValueError("unpack(b) received extra data.")  # msgpack's words, after the message's errors
        else:
            wire = msgpack.unpackb(frame, **_UNPACK_LIMITS)
    except (IndexError, ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise _bad(f"not a msgpack message: {exc}") from None
    if not isinstance(wire, dict):
        raise _bad("a message must be a msgpack map")
    kind = wire.pop("type", None)
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise _bad(f"unknown message type {quote(kind)}")
    message: Message = _build(cls, wire, kind, max_pixels)  # an instance of cls
    return message


_PEEK_MAX_OBJECTS = 256
"""Most msgpack objects :func:`peek_job_id` steps over before it gives up. A request's top-level map holds about
20 entries, its planes and LoRAs a few dozen objects more; a frame that needs more walking is not worth it."""

_FIXED_SIZES = {0xc0: 1, 0xc2: 1, 0xc3: 1, 0xca: 5, 0xcb: 9, 0xcc: 2, 0xcd: 3, 0xce: 5, 0xcf: 9,
                0xd0: 2, 0xd1: 3, 0xd2: 5, 0xd3: 9, 0xd4: 3, 0xd5: 4, 0xd6: 6, 0xd7: 10, 0xd8: 18}
"""Bytes of the msgpack objects whose type byte fixes their size: nil, booleans, numbers, fixext."""

_SIZED = {0xc4: ("bin", 1, 0), 0xc5: ("bin", 2, 0), 0xc6: ("bin", 4, 0),
          0xc7: ("ext", 1, 1), 0xc8: ("ext", 2, 1), 0xc9: ("ext", 4, 1),
          0xd9: ("str", 1, 0), 0xda: ("str", 2, 0), 0xdb: ("str", 4, 0)}
"""Type byte → (kind, bytes of the big-endian payload length, header bytes after it) of msgpack's str, bin, ext."""

_COUNTED = {0xdc: ("array", 2, 1), 0xdd: ("array", 4, 1), 0xde: ("map", 2, 2), 0xdf: ("map", 4, 2)}
"""Type byte → (kind, bytes of the big-endian item count, objects per item) of msgpack's array16/32, map16/32."""


def _object(data: memoryview, at: int) -> tuple[str, int, int, int]:
    """The msgpack object whose type byte is at offset ``at``: ``(kind, start, end, contained)``.

    ``kind`` is ``"map"``, ``"array"``, ``"str"``, ``"bin"``, ``"ext"`` or ``"scalar"``; ``data[start:end]`` is
    its payload (the UTF-8 bytes of a str; empty for containers, whose ``contained`` objects follow at ``end``:
    2 per map entry). Reads only the header: O(1), whatever the payload's size.

    Raises:
        IndexError, ValueError: the frame ends inside the object, or ``0xc1`` (never used) is its type byte.
    """
    first = data[at]
    kind, start, length, contained = "scalar", at + 1, 0, 0
    if 0x80 <= first <= 0x8f:
        kind, contained = "map", 2 * (first & 0x0f)
    elif 0x90 <= first <= 0x9f:
        kind, contained = "array", first & 0x0f
    elif 0xa0 <= first <= 0xbf:
        kind, length = "str", first & 0x1f
    elif first in _FIXED_SIZES:
        length = _FIXED_SIZES[first] - 1
    elif first in _SIZED:
        kind, width, extra = _SIZED[first]
        length = int.from_bytes(data[at + 1:at + 1 + width], "big")
        start = at + 1 + width + extra
    elif first in _COUNTED:
        kind, width, per_item = _COUNTED[first]
        contained = per_item * int.from_bytes(data[at + 1:at + 1 + width], "big")
        start = at + 1 + width
    elif first == 0xc1:
        raise ValueError("0xc1 starts no msgpack object")
    if start + length > len(data):
        raise ValueError("the frame ends inside an object")
    return kind, start, start + length, contained


def _skip(data: memoryview, at: int, budget: int, max_depth: int | None = None) -> tuple[int, int]:
    """Step over the msgpack object at ``at`` and everything it contains: ``(offset after it, budget left)``.

    Args:
        max_depth: most levels of nested maps and arrays (the object itself is level 1); None: no limit.

    Raises:
        IndexError, ValueError: as :func:`_object`, the object holds more than ``budget`` objects (itself
            included), or its containers nest deeper than ``max_depth``.
    """
    pending = [1]  # objects still to step over at each open level
    while pending:
        if not pending[-1]:
            pending.pop()
            continue
        pending[-1] -= 1
        budget -= 1
        if budget < 0:
            raise ValueError("too many objects to step over")
        _, _, at, contained = _object(data, at)
        if contained:
            if max_depth is not None and len(pending) > max_depth:
                raise ValueError(f"maps and arrays nested deeper than {max_depth} levels")
            pending.append(contained)
    return at, budget


def peek_job_id(frame: object) -> str | None:
    """The ``job_id`` of an inpaint request that :func:`decode` refused, when it can be read cheaply.

    Reads only the frame's top-level map, in place: a key or value is stepped over by its msgpack header, so a
    100 MB plane costs as little as a number, and the whole walk stops after :data:`_PEEK_MAX_OBJECTS` objects.
    Nothing is copied or built but the job id itself (at most :data:`protocol.messages.MAX_JOB_ID_CHARS`
    characters), so a hostile frame cannot make this slow or large, whatever its size.

    Args:
        frame: the frame as received (a text frame or anything else gives None).

    Returns:
        The ``job_id`` string (1…``MAX_JOB_ID_CHARS`` characters) when the frame is a map whose ``type`` is
        ``"inpaint"``; None otherwise (another message type: refusing it ends no job), or when the frame is
        cut, not msgpack, or too long a walk. Never raises.
    """
    if not isinstance(frame, bytes | bytearray | memoryview):
        return None
    data = memoryview(frame)
    if data.format != "B" or data.ndim != 1:
        return None
    found: dict[bytes, bytes] = {}
    try:
        kind, _, at, contained = _object(data, 0)
        if kind != "map":
            return None
        budget = _PEEK_MAX_OBJECTS
        for _ in range(contained // 2):
            kind, start, end, _ = _object(data, at)
            key = bytes(data[start:end]) if kind == "str" and end - start <= len("job_id") else None
            at, budget = _skip(data, at, budget)
            kind, start, end, _ = _object(data, at)
            if key in (b"type", b"job_id") and kind == "str" and end - start <= _UTF8_BYTES_PER_CHAR * MAX_JOB_ID_CHARS:
                found[key] = bytes(data[start:end])
            at, budget = _skip(data, at, budget)
        job_id = found.get(b"job_id", b"").decode("utf-8")
    except (IndexError, ValueError):  # a UnicodeDecodeError is a ValueError
        return None
    return job_id if found.get(b"type") == b"inpaint" and 1 <= len(job_id) <= MAX_JOB_ID_CHARS else None
