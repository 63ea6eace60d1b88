"""What made a result: the whole request of a fill, kept with each result layer (issue 12, "results that remember").

:class:`RequestMetadata` is one variant's record: the options as the user gave them (:class:`protocol.FillOptions`,
:class:`protocol.EditorOptions`), the engine and fill mode it ran with, the variant's seed, the selection it filled
(:class:`RecordedSelection`: its bounds, its coverage and the canvas size), the context crop sent, the job's id and
its lineage's, and which client, daemon and protocol made it. :meth:`RequestMetadata.to_json` writes it as JSON,
:meth:`RequestMetadata.from_json` reads it back; the GIMP plug-in keeps it as the parasite :data:`PARASITE_NAME` of
each result layer (persistent: saved in the XCF), the command line as the PNG text chunk :data:`PNG_TEXT_KEY` of each
output. The layer's name stays short (:func:`client.fill.layer_name`); this record holds the truth.

Why the selection's coverage and not only its bounds: *More Like This* fills the same selection again after the user
may have changed or dropped it, and an ellipse with a feathered edge is not its bounding box. The coverage is stored
inside the bounds, zlib-compressed (a selection is mostly runs of 0 and 255) and in base64 (JSON has no bytes).

The JSON object (format :data:`FORMAT_VERSION`)::

    {"format": 1, "client": "gimp-inpaint-plugin/0.1", "daemon_version": "0.1.0", "protocol_version": 5,
     "job": "<the request's job id>", "origin": "<the job id of the lineage's first fill>",
     "engine": "opencv", "fill_mode": "remove", "seed": 1234,
     "options": {<every row of protocol.FILL_OPTIONS by name>}, "editor": {<every row of protocol.EDITOR_OPTIONS>},
     "canvas": [width, height], "selection": [x, y, width, height], "crop": [x, y, width, height],
     "mask": "<base64 of zlib of the selection's Y u8 coverage inside its bounds>"}

Reading it (:meth:`RequestMetadata.from_json`) refuses, with a :class:`MetadataError` whose message says what is
wrong: text that is not a JSON object, a format other than :data:`FORMAT_VERSION` (a newer one asks for a newer
gimp-inpaint; there is no older one yet), a missing or mistyped field, and an option the options table refuses
(out of range, an unknown scheduler). It accepts what later versions of the same format may write, with a note in
:attr:`RequestMetadata.notes` for each: an option or field this version does not know is ignored, an option the
record lacks (added to the table after it was written) takes its default.

Pure: standard library and :mod:`protocol` only (vendored into the GIMP plug-in).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gimp_inpaint.protocol import (
    EDITOR_OPTIONS,
    FILL_OPTIONS,
    PROTOCOL_VERSION,
    SEED_MAX,
    EditorOptions,
    FillMode,
    FillOptions,
    OptionSpec,
    ProtocolError,
    Rect,
)

PARASITE_NAME = "gimp-inpaint-request"
"""The name of the GIMP parasite holding a result layer's :meth:`RequestMetadata.to_json` (UTF-8), attached with
``Gimp.PARASITE_PERSISTENT`` so that it is saved in the XCF file."""

PNG_TEXT_KEY = "gimp-inpaint"
"""The keyword of the PNG text chunk (``iTXt``, compressed) holding an output file's :meth:`RequestMetadata.to_json`
(``gimp-inpaint fill``; read back by ``--from``)."""

FORMAT_VERSION = 1
"""The version of the JSON layout written by :meth:`RequestMetadata.to_json`, its ``"format"`` field. Raised when a
field changes meaning or a required one is added (a new option of the table is not such a change: options are read
by name, see the module docstring)."""

_FIELDS = ("format", "client", "daemon_version", "protocol_version", "job", "origin", "engine", "fill_mode", "seed",
           "options", "editor", "canvas", "selection", "crop", "mask")
"""The fields of the JSON object, in the order :meth:`RequestMetadata.to_json` writes them; all are required."""


class MetadataError(ValueError):
    """Request metadata that cannot be read or made; :attr:`message` says what is wrong, for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class RecordedSelection:
    """A selection as it was when a fill ran: its bounds on a canvas of ``canvas_width × canvas_height`` and its
    coverage inside them.

    Attributes:
        canvas_width, canvas_height: the image's size then (pixels).
        bounds: the selection's bounding box (image pixels), inside the canvas.
        mask: ``bounds.width × bounds.height`` bytes, Y u8, row-major (255 = selected).

    Raises:
        MetadataError: empty bounds, bounds outside the canvas, or a mask of another length.
    """

    canvas_width: int
    canvas_height: int
    bounds: Rect
    mask: bytes

    def __post_init__(self) -> None:
        canvas = Rect(0, 0, self.canvas_width, self.canvas_height)
        if self.bounds.width <= 0 or self.bounds.height <= 0 or not canvas.contains(self.bounds):
            raise MetadataError(f"the selection {_rect_text(self.bounds)} is empty or outside the "
                                f"{self.canvas_width}×{self.canvas_height} canvas")
        if len(self.mask) != self.bounds.width * self.bounds.height:
            raise MetadataError(f"the selection's mask has {len(self.mask)} bytes, not {self.bounds.width}×"
                                f"{self.bounds.height}")

    @classmethod
    def from_crop(cls, canvas_width: int, canvas_height: int, bounds: Rect, crop: Rect,
                  crop_mask: bytes) -> RecordedSelection:
        """The selection ``bounds`` cut out of ``crop_mask`` (``crop.width × crop.height`` bytes, Y u8: the
        selection read over the context crop, which contains ``bounds``)."""
        rows = (crop_mask[(y - crop.y) * crop.width + bounds.x - crop.x:][:bounds.width]
                for y in range(bounds.y, bounds.bottom))
        return cls(canvas_width, canvas_height, bounds, b"".join(rows))

    def read(self, rect: Rect) -> bytes:
        """The coverage inside ``rect`` (image pixels): ``rect.width × rect.height`` bytes, 0 outside the bounds."""
        out = bytearray(rect.width * rect.height)
        b = self.bounds
        x0, x1 = max(rect.x, b.x), min(rect.right, b.right)
        for y in range(max(rect.y, b.y), min(rect.bottom, b.bottom)):
            if x0 < x1:
                start = (y - rect.y) * rect.width + x0 - rect.x
                out[start:start + x1 - x0] = self.mask[(y - b.y) * b.width + x0 - b.x:][:x1 - x0]
        return bytes(out)


@dataclass(frozen=True)
class RequestMetadata:
    """The request that made one result layer (one variant).

    Attributes:
        options: the fill options as the user gave them (engine and fill mode as asked: empty and ``auto`` stay so;
            ``seed`` as asked, −1 for random; ``num_variants`` of the request).
        editor: the editor options of the fill.
        engine: the engine it ran on (``options.engine``, or the first available one when that was empty).
        fill_mode: the fill mode it ran with (``options.fill_mode`` with ``auto`` resolved; never ``auto``).
        seed: this variant's seed, 0…:data:`protocol.SEED_MAX`.
        crop: the context crop sent (image pixels), which contains the selection's bounds.
        selection: the selection filled (:class:`RecordedSelection`).
        job: the request's job id.
        origin: the job id of the first fill of this result's lineage (its own ``job`` for a plain fill; *More Like
            This* and *Edit and Regenerate…* keep their source's), so that the results of one lineage can be told.
        client: the client that made it, with its version (``"gimp-inpaint-plugin/0.1"``, ``"gimp-inpaint-cli/0.1"``).
        daemon_version: the daemon's version from its welcome (``"0.1.0"``; ``"unknown"`` from a bare checkout).
        protocol_version: the protocol spoken (:data:`protocol.PROTOCOL_VERSION`).
        notes: what :meth:`from_json` ignored or defaulted, one sentence each (never written; not compared).

    Raises:
        MetadataError: a seed out of range, ``auto`` as the fill mode, an empty engine, job or origin, a crop that
            does not contain the selection or leaves the canvas, a protocol version below 1.
    """

    options: FillOptions
    editor: EditorOptions
    engine: str
    fill_mode: FillMode
    seed: int
    crop: Rect
    selection: RecordedSelection
    job: str
    origin: str
    client: str
    daemon_version: str
    protocol_version: int = PROTOCOL_VERSION
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= SEED_MAX:
            raise MetadataError(f"the seed {self.seed} is outside [0, {SEED_MAX}]")
        if self.fill_mode is FillMode.AUTO:
            raise MetadataError("the fill mode it ran with cannot be auto")
        for name in ("engine", "job", "origin"):
            if not getattr(self, name):
                raise MetadataError(f"the field {name!r} is empty")
        canvas = Rect(0, 0, self.selection.canvas_width, self.selection.canvas_height)
        if not (canvas.contains(self.crop) and self.crop.contains(self.selection.bounds)):
            raise MetadataError(f"the crop {_rect_text(self.crop)} does not contain the selection "
                                f"{_rect_text(self.selection.bounds)} inside the canvas")
        if self.protocol_version < 1:
            raise MetadataError(f"the protocol version {self.protocol_version} is not one")

    def request_options(self) -> FillOptions:
        """The options record the daemon got: :attr:`options` with the :attr:`engine` and :attr:`fill_mode` it ran
        with."""
        return dataclasses.replace(self.options, engine=self.engine, fill_mode=self.fill_mode)

    def regenerate_options(self, seed: int | None = None, num_variants: int = 1) -> FillOptions:
        """The options to fill like this again: :attr:`options` on the :attr:`engine` it ran on (the fill mode as
        asked, so that ``auto`` decides again for a changed prompt), with ``seed`` (default: this variant's) and
        ``num_variants`` (default 1): by default, the options that make this one result again.

        Raises:
            ProtocolError(INVALID_REQUEST): ``seed`` or ``num_variants`` out of range.
        """
        return dataclasses.replace(self.options, engine=self.engine, seed=self.seed if seed is None else seed,
                                   num_variants=num_variants)

    def to_json(self) -> str:
        """This record as a JSON object (see the module docstring), UTF-8 text without ASCII escapes."""
        b = self.selection
        data = {
            "format": FORMAT_VERSION, "client": self.client, "daemon_version": self.daemon_version,
            "protocol_version": self.protocol_version, "job": self.job, "origin": self.origin, "engine": self.engine,
            "fill_mode": self.fill_mode.value, "seed": self.seed, "options": _record_json(self.options, FILL_OPTIONS),
            "editor": _record_json(self.editor, EDITOR_OPTIONS), "canvas": [b.canvas_width, b.canvas_height],
            "selection": _rect_json(b.bounds), "crop": _rect_json(self.crop),
            "mask": base64.b64encode(zlib.compress(b.mask, 9)).decode("ascii"),
        }
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> RequestMetadata:
        """Read what :meth:`to_json` wrote (``bytes``: UTF-8).

        Raises:
            MetadataError: not a JSON object, another format, a missing or mistyped field, an option out of its
                range (see the module docstring; the message says which).
        """
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise MetadataError(f"the request metadata is not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise MetadataError(f"the request metadata is a JSON {type(data).__name__}, not an object")
        version = data.get("format")
        if type(version) is not int:
            raise MetadataError("the request metadata has no format version: it was not written by gimp-inpaint")
        if version > FORMAT_VERSION:
            raise MetadataError(f"the request metadata is of format {version}, written by a newer gimp-inpaint; "
                                f"this one reads format {FORMAT_VERSION}: update gimp-inpaint to use it")
        if version != FORMAT_VERSION:
            raise MetadataError(f"the request metadata is of format {version}, which no gimp-inpaint wrote; this one "
                                f"reads format {FORMAT_VERSION}")
        missing = [name for name in _FIELDS if name not in data]
        if missing:
            raise MetadataError(f"the request metadata lacks the field{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(repr(name) for name in missing)}")
        notes = [f"the field {name!r} is unknown to this gimp-inpaint and was ignored"
                 for name in data if name not in _FIELDS]
        options = _record(FillOptions, FILL_OPTIONS, _typed(data, "options", dict), "option", notes)
        editor = _record(EditorOptions, EDITOR_OPTIONS, _typed(data, "editor", dict), "editor option", notes)
        width, height = _ints(data, "canvas", 2)
        mode = _typed(data, "fill_mode", str)
        try:
            fill_mode = FillMode(mode)
        except ValueError:
            raise MetadataError(f"the request metadata's fill mode {mode!r} is not one of "
                                f"{', '.join(m.value for m in FillMode)}") from None
        try:
            mask = zlib.decompress(base64.b64decode(_typed(data, "mask", str), validate=True))
        except (binascii.Error, zlib.error) as exc:
            raise MetadataError(f"the request metadata's mask cannot be read ({exc})") from None
        return cls(options=options, editor=editor, engine=_typed(data, "engine", str), fill_mode=fill_mode,
                   seed=_typed(data, "seed", int), crop=Rect(*_ints(data, "crop", 4)),
                   selection=RecordedSelection(width, height, Rect(*_ints(data, "selection", 4)), mask),
                   job=_typed(data, "job", str), origin=_typed(data, "origin", str), client=_typed(data, "client", str),
                   daemon_version=_typed(data, "daemon_version", str),
                   protocol_version=_typed(data, "protocol_version", int), notes=tuple(notes))


def next_seed(start: int, used: Collection[int], count: int) -> int:
    """The first seed from ``start`` on (wrapping from :data:`protocol.SEED_MAX` to 0, as the daemon's variant seeds
    do) whose ``count`` variants (seeds ``s, s+1, …, s+count−1``) are none of ``used``: the base seed of *More Like
    This*, with ``start`` one past the chosen layer's seed and ``used`` the seeds of its lineage, so new variants never
    repeat a seed of the ones beside them.

    Raises:
        ValueError: ``count`` is below 1, or no ``count`` consecutive seeds are free.
    """
    space = SEED_MAX + 1
    taken = {seed % space for seed in used}
    if count < 1 or count > space - len(taken):
        raise ValueError(f"no {count} free seeds among the {space - len(taken)} left")
    seed = start % space
    for _ in range(len(taken) + 1):  # each clash moves past a used seed, so this many tries find a free run
        clash = next((k for k in range(count) if (seed + k) % space in taken), None)
        if clash is None:
            return seed
        seed = (seed + clash + 1) % space
    raise ValueError(f"no run of {count} free seeds from {start}")


def _rect_text(rect: Rect) -> str:
    return f"{rect.width}×{rect.height} at ({rect.x}, {rect.y})"


def _rect_json(rect: Rect) -> list[int]:
    return [rect.x, rect.y, rect.width, rect.height]


def _record_json(record: FillOptions | EditorOptions, rows: Mapping[str, OptionSpec]) -> dict[str, Any]:
    """Every row's value of ``record`` as JSON holds it: an enum as its wire string, the LoRAs as an object."""
    values = {name: getattr(record, name) for name in rows}
    return {name: value.value if isinstance(value, Enum) else value for name, value in values.items()}


def _record(kind: type[Any], rows: Mapping[str, OptionSpec], data: dict[str, Any], what: str,
            notes: list[str]) -> Any:
    """``kind`` (:class:`protocol.FillOptions` or :class:`protocol.EditorOptions`) from its JSON object, checked by
    the record itself; unknown names are ignored and missing ones take their default, each with a note.

    Raises:
        MetadataError: the record refuses a value (its message).
    """
    notes.extend(f"the {what} {name!r} is unknown to this gimp-inpaint and was ignored"
                 for name in data if name not in rows)
    notes.extend(f"the {what} {name!r} was not recorded and takes its default" for name in rows if name not in data)
    try:
        return kind(**{name: value for name, value in data.items() if name in rows})
    except ProtocolError as exc:
        raise MetadataError(f"the request metadata's {what} {exc.message}") from None


def _typed(data: dict[str, Any], name: str, kind: type[Any]) -> Any:
    """``data[name]``, which must be of ``kind`` (a ``bool`` is no ``int``).

    Raises:
        MetadataError: it is not.
    """
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MetadataError(f"the request metadata's field {name!r} must be {_KIND_NAMES[kind]}, got "
                            f"{type(value).__name__}")
    return value


_KIND_NAMES = {str: "text", int: "an integer", dict: "an object", list: "a list"}


def _ints(data: dict[str, Any], name: str, count: int) -> list[int]:
    """``data[name]``, a list of ``count`` integers (a rectangle ``[x, y, width, height]`` or a size).

    Raises:
        MetadataError: it is not.
    """
    value: list[int] = _typed(data, name, list)
    if len(value) != count or not all(type(item) is int for item in value):
        raise MetadataError(f"the request metadata's field {name!r} must be {count} integers, got {value!r}")
    return value
