"""The options of a fill: two records and the one table that describes them.

:class:`FillOptions` holds every option a request carries (it travels unchanged in
:attr:`protocol.InpaintRequest.options`, and the daemon hands the same record to the engine); :class:`EditorOptions`
holds what only the editor uses (the context around the selection, which layers it reads). Each field of both
records is declared with :func:`option`, whose row (:class:`OptionSpec`: default, range, unit, label, help) is the
single source for validation (the records' ``__post_init__``), the GIMP procedure's arguments, the CLI's flags, the
README's table (:func:`markdown_table`) and the handshake (:attr:`protocol.EngineInfo.options` names rows of
:data:`FILL_OPTIONS`). Adding an option is one :func:`option` line here plus the code that uses it
(``docs/architecture.md``, "How to add a request option").

Pure: standard library only (vendored into the GIMP plug-in).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .enums import FillMode, Scheduler
from .errors import ErrorCode, ProtocolError
from .quoting import quote

SEED_MAX = 2**31 - 1
"""Largest seed: seeds are 0…2³¹−1 everywhere (the daemon's random pick, this validation, the GIMP dialog), the
range of a GIMP int argument (a ``gint``; GIMP 3 has no 64-bit one, and its ``uint`` argument cannot hold −1,
"random"), so a seed read from a layer name can be typed back into the Seed field. ``torch.Generator.manual_seed``
and NumPy accept every one."""

MAX_VARIANTS = 16
"""Most variants one request may ask for."""

MAX_PROMPT_CHARS = 4096
"""Longest ``prompt`` or ``negative_prompt`` (characters). SD's CLIP text encoder reads only 77 tokens, so this
never cuts a useful prompt; it bounds a request's frame (:func:`protocol.max_frame_bytes`)."""

MAX_ENGINE_NAME_CHARS = 128
"""Longest engine or LoRA name a request may carry (characters); longer names cannot exist in a daemon's
configuration."""

MAX_LORAS = 8
"""Most LoRAs one request may apply at once."""

LORA_WEIGHT_MAX = 4.0
"""Largest absolute LoRA weight (diffusers ``set_adapters`` ``adapter_weights``); 1.0 is the LoRA as trained."""

LoraWeights = dict[str, float]
"""LoRA name (from :attr:`protocol.EngineInfo.loras`) → weight in ±:data:`LORA_WEIGHT_MAX`, in the user's order."""

_ROW = "gimp_inpaint.option"
"""The ``dataclasses.field`` metadata key under which :func:`option` keeps a row."""


@dataclass(frozen=True)
class OptionSpec:
    """One row of the options table: a field of :class:`FillOptions` or :class:`EditorOptions`.

    Attributes:
        name: the field's name, which is also its wire name (``snake_case``, diffusers' name where it has one).
        type: ``str``, ``int``, ``float``, ``bool``, an enum (:class:`protocol.Scheduler`) or ``dict`` (LoRA weights).
        default: the value when the user sets none (for ``dict``: empty).
        minimum, maximum: the closed range of a number (for ``dict``: of each weight); None for other types.
        unit: what a number counts (``"pixels"``, ``"steps"``), empty when it is a plain factor.
        label: the GIMP dialog's label, ``_`` before its mnemonic (unique among the dialog's labels).
        help: one sentence for the dialog's tooltip and the CLI's ``--help``.
        max_chars: the longest string (characters), for ``str`` options.
        aliases: older CLI flags that still work (``--steps`` for ``--num-inference-steps``).
    """

    name: str
    type: type
    default: Any
    label: str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""
    max_chars: int | None = None
    aliases: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        """The CLI flag: ``--`` and the name with ``-`` for ``_`` (``--guidance-scale``)."""
        return "--" + self.argument

    @property
    def argument(self) -> str:
        """The GIMP procedure argument's name: the name with ``-`` for ``_`` (GIMP's property names)."""
        return self.name.replace("_", "-")

    @property
    def range_text(self) -> str:
        """The range as a person writes it, ``"0.01…1"``, ``"0…1024 pixels"``, ``"-1…2147483647"``; for LoRAs the
        weights' range; empty for other types."""
        if self.minimum is None or self.maximum is None:
            return ""
        unit = f" {self.unit}" if self.unit else ""
        return f"{_number(self.minimum)}…{_number(self.maximum)}{unit}"

    def check(self, value: Any) -> Any:
        """``value`` if it is a valid value of this option, with ``int`` widened to ``float`` and a member's string
        turned into the enum member; the records' ``__post_init__`` calls it on every field.

        Raises:
            ProtocolError(INVALID_REQUEST): wrong type, outside the range, too long, an unknown enum value, or
                (LoRAs) more than :data:`MAX_LORAS`, a name of 0 or more than :data:`MAX_ENGINE_NAME_CHARS`
                characters, a weight out of range.
        """
        if issubclass(self.type, Enum):
            try:
                return self.type(value)
            except ValueError:
                raise _invalid(f"{self.name} {quote(value)} is not one of "
                               f"{', '.join(m.value for m in self.type)}") from None
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not _is_of_type(value, self.type):
            raise _invalid(f"{self.name} must be of type {self.type.__name__}, got {type(value).__name__}")
        if self.type is str:
            _check_text(self.name, value)
        if self.type is str and self.max_chars is not None and len(value) > self.max_chars:
            raise _invalid(f"{self.name} has {len(value)} characters; at most {self.max_chars} are allowed")
        if self.type in (int, float):
            self._check_range(self.name, value)
        if self.type is dict:
            self._check_loras(value)
        return value

    def _check_range(self, what: str, value: float) -> None:
        # an int is compared exactly: math.isfinite would raise OverflowError beyond a float's range (10**400)
        if self.minimum is not None and self.maximum is not None and not (
                (isinstance(value, int) or math.isfinite(value)) and self.minimum <= value <= self.maximum):
            raise _invalid(f"{what}={value!r} is outside [{_number(self.minimum)}, {_number(self.maximum)}]")

    def _check_loras(self, loras: Mapping[Any, Any]) -> None:
        if len(loras) > MAX_LORAS:
            raise _invalid(f"{len(loras)} LoRAs requested; at most {MAX_LORAS} are allowed")
        for name, weight in loras.items():
            if not isinstance(name, str) or not 1 <= len(name) <= MAX_ENGINE_NAME_CHARS:
                raise _invalid(f"LoRA names must be strings of 1…{MAX_ENGINE_NAME_CHARS} characters")
            _check_text("a LoRA name", name)
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise _invalid(f"the weight of LoRA {quote(name)} must be a number")
            self._check_range(f"the weight of LoRA {quote(name)}", weight)


def _is_of_type(value: object, kind: type) -> bool:
    """``isinstance(value, kind)``, except that a ``bool`` is of no type but ``bool``. A function of its own so that
    :meth:`OptionSpec.check` keeps its value typed ``Any``: ``isinstance`` with a plain ``type`` narrows to
    ``object``."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _check_text(what: str, text: str) -> None:
    """Refuse a string that is not Unicode text: a lone surrogate, which UTF-8 (msgpack's strings) cannot carry, as
    Python makes of a command-line argument's undecodable bytes.

    Raises:
        ProtocolError(INVALID_REQUEST): ``text`` holds one.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _invalid(f"{what} is not valid text (character {exc.start + 1} is a lone surrogate, "
                       f"{text[exc.start]!a}): check the terminal's or file's encoding") from None


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_REQUEST, message)


def _number(value: float) -> str:
    """``1`` for 1.0, ``0.01`` for 0.01, ``2147483647`` for 2³¹−1: a range's bound as a person writes it."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def option(default: Any, label: str, help: str, *, minimum: float | None = None, maximum: float | None = None,
           unit: str = "", max_chars: int | None = None, aliases: tuple[str, ...] = ()) -> Any:
    """Declare a field of an options record together with its table row (:class:`OptionSpec`, whose name and
    type :func:`table` reads from the field). A ``dict`` default is given as ``{}`` and becomes a factory."""
    row = {"label": label, "help": help, "minimum": minimum, "maximum": maximum, "unit": unit,
           "max_chars": max_chars, "aliases": aliases}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={_ROW: row})
    return field(default=default, metadata={_ROW: row})


def table(record: type) -> dict[str, OptionSpec]:
    """The rows of an options record, name → :class:`OptionSpec`, in field order (built once per record and kept
    in :data:`_TABLES`: every record made checks itself against it)."""
    rows = _TABLES.get(record)
    if rows is None:
        hints = typing.get_type_hints(record)
        rows = {}
        for f in dataclasses.fields(record):
            kind = typing.get_origin(hints[f.name]) or hints[f.name]
            default = {} if f.default is dataclasses.MISSING else f.default
            rows[f.name] = OptionSpec(name=f.name, type=kind, default=default, **f.metadata[_ROW])
        _TABLES[record] = rows
    return rows


_TABLES: dict[type, dict[str, OptionSpec]] = {}
""":func:`table`'s rows of each record it has read (``functools.cache`` would do, but mypy cannot see a class as
hashable there)."""


def _check_record(record: FillOptions | EditorOptions) -> None:
    """Check (and normalise, see :meth:`OptionSpec.check`) every field of a frozen options record."""
    for name, spec in table(type(record)).items():
        object.__setattr__(record, name, spec.check(getattr(record, name)))


@dataclass(frozen=True)
class FillOptions:
    """Every option of one fill request (diffusers' names and meanings); :data:`FILL_OPTIONS` is its table.

    Defaults and ranges are in the table; see each :func:`option` line below. Engines that do not use an option
    ignore it (:attr:`protocol.EngineInfo.options` says which they use) or refuse a value they cannot honour
    with ``INCOMPATIBLE`` (a refiner or ControlNet the model lacks, a LoRA of another family).

    Raises:
        ProtocolError(INVALID_REQUEST): a value of the wrong type or out of its range (:meth:`OptionSpec.check`).
    """

    prompt: str = option("", "_Prompt", "What to paint in the selection (empty: fill from the surroundings)",
                         max_chars=MAX_PROMPT_CHARS)
    negative_prompt: str = option("", "_Negative prompt", "What to avoid", max_chars=MAX_PROMPT_CHARS)
    engine: str = option("", "_Engine", "Daemon engine, e.g. sd15-inpaint or opencv (empty: the first available); "
                         "`gimp-inpaint status` lists the engines with their families, LoRAs and refiners",
                         max_chars=MAX_ENGINE_NAME_CHARS)
    fill_mode: FillMode = option(FillMode.AUTO, "Fill m_ode", "How the hole is prepared for the engine: fill (a "
                                 "blur of the surroundings), remove (the removal engine's fill, then a neutral "
                                 "prompt), expand (from the canvas border); auto picks remove without a prompt, "
                                 "expand at the canvas edge or over transparent canvas, else fill")
    scheduler: Scheduler = option(Scheduler.DEFAULT, "Sc_heduler", "Denoising scheduler (Model default: the one "
                                  "the model was published with)")
    loras: LoraWeights = option({}, "_LoRAs", "LoRAs of the daemon's configuration as name:weight, separated by "
                                "commas, e.g. “detail:0.8, style” (a name alone: weight 1; empty: none)",
                                minimum=-LORA_WEIGHT_MAX, maximum=LORA_WEIGHT_MAX, aliases=("--lora",))
    strength: float = option(1.0, "_Strength", "How much the selected area may change (diffusers strength)",
                             minimum=0.01, maximum=1.0)
    num_inference_steps: int = option(25, "S_teps", "Denoising steps", minimum=1, maximum=500, unit="steps",
                                      aliases=("--steps",))
    guidance_scale: float = option(7.5, "_Guidance scale", "How closely to follow the prompt (classifier-free "
                                   "guidance)", minimum=0.0, maximum=50.0)
    refiner_strength: float = option(0.0, "_Refiner strength", "Share of the denoising done by a refining pass "
                                     "(the model's SDXL refiner, else the same model; 0: none)",
                                     minimum=0.0, maximum=0.99)
    controlnet_conditioning_scale: float = option(1.0, "_ControlNet scale", "Weight of the ControlNet "
                                                  "(ControlNet engines only)", minimum=0.0, maximum=2.0,
                                                  aliases=("--controlnet-scale",))
    eta: float = option(0.0, "DD_IM eta", "Noise added at each step by the DDIM scheduler (η of the DDIM paper: "
                        "0 deterministic, 1 like DDPM); other schedulers ignore it; SD families", minimum=0.0,
                        maximum=1.0)
    seed: int = option(-1, "See_d", "Random seed (-1: a new one each run); variant k uses seed + k",
                       minimum=-1, maximum=SEED_MAX)
    num_variants: int = option(1, "_Variants", "Results to generate, one layer each", minimum=1,
                               maximum=MAX_VARIANTS, aliases=("--variants",))
    grow: int = option(4, "Gro_w", "Pixels to grow the selection by before filling", minimum=0, maximum=1024,
                       unit="pixels")
    feather: int = option(12, "_Feather", "Blur radius of the result's edge (diffusers blur_factor)", minimum=0,
                          maximum=1024, unit="pixels")
    color_match: bool = option(True, "_Keep surrounding colours", "Colour match: give the pixels an engine "
                               "generates from a prompt the LAB mean and spread of the original ring around the "
                               "hole, so no colour shift shows (removal engines fill from that ring already)")

    def __post_init__(self) -> None:
        _check_record(self)


@dataclass(frozen=True)
class EditorOptions:
    """What the editor does around a fill, never sent: :data:`EDITOR_OPTIONS` is its table.

    Raises:
        ProtocolError(INVALID_REQUEST): a value of the wrong type or out of its range.
    """

    padding: int = option(64, "P_adding", "Pixels of surrounding picture sent as context", minimum=0,
                          maximum=1024, unit="pixels")
    sample_merged: bool = option(True, "Sample _merged", "Take the picture around the selection as you see it, all "
                                 "visible layers (off: the selected layer alone)")

    def __post_init__(self) -> None:
        _check_record(self)


def resolve_fill_mode(mode: FillMode, prompt: str, *, touches_edge: bool, covers_transparent: bool) -> FillMode:
    """The fill mode a request runs with: ``mode`` itself unless it is ``auto``; then ``expand`` when the selection
    touches the canvas edge or covers fully transparent canvas, else ``remove`` for a blank prompt (whitespace
    only), else ``fill``. (Krita AI Diffusion's ``detect_inpaint_mode``, ``ai_diffusion/workflow.py``, picks expand
    only when the selection spans the canvas's whole width or height; issue 11 asks for any edge.)

    Args:
        mode: the request's :attr:`FillOptions.fill_mode`.
        prompt: the request's prompt.
        touches_edge: the selection reaches a side of the canvas (the editor knows; a daemon, which sees only the
            crop, passes False).
        covers_transparent: some pixel to repaint has alpha 0.
    """
    if mode is not FillMode.AUTO:
        return mode
    if touches_edge or covers_transparent:
        return FillMode.EXPAND
    return FillMode.FILL if prompt.strip() else FillMode.REMOVE


FILL_OPTIONS = table(FillOptions)
"""The rows of :class:`FillOptions`, name → :class:`OptionSpec`."""

EDITOR_OPTIONS = table(EditorOptions)
"""The rows of :class:`EditorOptions`, name → :class:`OptionSpec`."""


def parse_loras(text: str) -> LoraWeights:
    """Read the LoRA field ``"name:weight, name2:weight"`` (``name=weight`` works too; a bare ``name`` means weight
    1.0, the LoRA as trained). Empty items are skipped, so ``""`` is no LoRA. The weights' range and the number of
    LoRAs are checked by :class:`FillOptions`.

    Raises:
        ProtocolError(INVALID_REQUEST): an item without a name, a weight that is not a finite number, or a LoRA
            named twice.
    """
    pairs: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        cut = max(item.rfind(":"), item.rfind("="))
        name, weight_text = (item[:cut].strip(), item[cut + 1:].strip()) if cut >= 0 else (item, "1")
        try:
            weight = float(weight_text)
        except ValueError:
            weight = math.nan
        if not name or not math.isfinite(weight):
            raise _invalid(f"Cannot read the LoRA “{item}”: write name:weight, e.g. “detail:0.8, style:1.2” "
                           f"(a name alone means weight 1).")
        if name in pairs:
            raise _invalid(f"The LoRA “{name}” is named twice; give each LoRA once.")
        pairs[name] = weight
    return pairs


def format_loras(loras: Mapping[str, float]) -> str:
    """The LoRA field's text for ``loras``: ``"detail:0.8, style:1"``, what :func:`parse_loras` reads back exactly
    (a weight whose short form would round is written in full, ``repr``)."""
    return ", ".join(f"{name}:{weight:g}" if float(f"{weight:g}") == weight else f"{name}:{weight!r}"
                     for name, weight in loras.items())


def _cell(spec: OptionSpec) -> tuple[str, str, str]:
    if spec.type is dict:
        return "none", f"each weight {spec.range_text}", spec.help
    if issubclass(spec.type, Enum):
        return f"`{spec.default.value}`", ", ".join(f"`{m.value}`" for m in spec.type), spec.help
    if spec.type is str:
        return (f"`{spec.default}`" if spec.default else "empty"), f"≤ {spec.max_chars} characters", spec.help
    if spec.type is bool:
        return ("on" if spec.default else "off"), "on, off", spec.help
    return _number(spec.default), spec.range_text, spec.help


def markdown_table() -> str:
    """The README's table of every option (both records): name, CLI flag, default, range and help, one row each."""
    lines = ["| option | CLI flag | default | range | what it does |", "|---|---|---|---|---|"]
    for rows, where in ((FILL_OPTIONS, ""), (EDITOR_OPTIONS, " (editor only, never sent)")):
        for spec in rows.values():
            default, values, help_text = _cell(spec)
            flags = " ".join(f"`{flag}`" for flag in (spec.flag, *spec.aliases))
            lines.append(f"| `{spec.name}` | {flags} | {default} | {values} | {help_text}{where} |")
    return "\n".join(lines) + "\n"
