"""``gimp-inpaint``: generative fill of image files through the daemon, from the command line.

::

    gimp-inpaint fill photo.png mask.png -o filled.png [--png-compression 0…9] [--engine E] [--prompt P]
                 [--num-variants N] [--scheduler S] [--lora NAME=WEIGHT]… [--refiner-strength R]
                 [--controlnet-scale C] …
    gimp-inpaint expand photo.png -o expanded.png [--pixels N] [--sides S] [--size WxH] [--aspect W:H]
                 [--png-compression 0…9] [--engine E] [--prompt P] …
    gimp-inpaint demo -o demo.png [--png-compression 0…9]
    gimp-inpaint status
    gimp-inpaint doctor [--config-dir DIR]
    gimp-inpaint connect wss://HOST:PORT --token TOKEN [--fingerprint SHA256] [--reset-fingerprint]
                 [--connection-file PATH]…

``fill``'s option flags are the rows of the options table (:data:`protocol.FILL_OPTIONS` and
:data:`protocol.EDITOR_OPTIONS`, :func:`add_option_flags`), with their defaults and ranges.
``fill`` does exactly what the GIMP procedure does (:func:`client.fill.run_fill` on a
file-backed :class:`client.document.Document`): only the context crop around the mask's
non-zero pixels is sent, and each variant is composed into the whole picture through its blend
mask (:func:`client.imaging.compose`). With ``--num-variants N`` > 1 the outputs are ``OUT-1.png`` …
``OUT-N.png`` (the stem of ``-o`` plus ``-k``); with one variant, ``OUT`` itself. Progress goes to
stderr (model download, model load, then steps: :func:`client.fill.progress_text`), one line per
written file (path, seed, timings) to stdout. Ctrl+C cancels the job. ``--png-compression`` (default
:data:`PNG_COMPRESSION`, fast) is the zlib level of PNG outputs (:func:`client.imaging.save_image`): a setting of
the files written, not a fill option, so not a row of the options table.
Each PNG output carries the request that made it, as the JSON of :class:`client.metadata.RequestMetadata` in its
text chunk :data:`client.metadata.PNG_TEXT_KEY` (other formats have no room for it); ``fill --from RESULT.png``
reads it back and takes its options as the defaults of every option flag: the settings that made that one file, on
the engine it ran on, with its seed and one variant. Flags given on the command line still win (``--lora`` given
replaces the recorded LoRAs). The mask is the command line's, not the recorded selection.
``expand`` is Generative Expand (:func:`client.fill.run_expand`): it grows the picture's canvas by ``--pixels`` on
each of ``--sides``, or to ``--size`` or ``--aspect`` (its flags are the rows of :data:`client.expand.EXPAND_OPTIONS`),
fills the new area with the ``expand`` fill mode and writes the grown picture (the new area is the result's, the old
picture exact wherever the blend mask is 0); it takes ``fill``'s option flags but ``--fill-mode``.
``status`` connects, prints the daemon's version and device and a table of its engines (family, model,
LoRAs, embeddings, refiner, availability), and exits 0, or 1 when the daemon cannot be reached (scripts
use it to check for a running daemon).
``doctor`` checks each link from GIMP to the GPU and prints one line per check (ok, warning or broken, with the
fix): :mod:`installer.doctor`; exit status 1 when something is broken.
``connect`` points the plug-in at a daemon (a GPU on another machine, ``wss://``): it handshakes with the token,
pins the daemon's certificate (trust on first use, printed; ``--fingerprint`` checks it against the one the daemon
printed at start instead; a URL already pinned is checked against its pin unless ``--reset-fingerprint``) and
writes URL, token and fingerprint into the installed plug-in's ``connection.json`` (every GIMP configuration's,
or ``--connection-file``), keeping its ``daemon_command``. ``fill``, ``expand``, ``demo`` and ``status`` on a
``wss://`` URL check the daemon against ``--fingerprint`` or that ``connection.json``'s pin for the same URL.

The daemon's URL defaults to the host and port of its ``daemon.toml`` (in ``--config-dir``, or its
default configuration folder), else ``ws://127.0.0.1:7869``.

Before anything is sent, ``fill`` and ``demo`` check what they can: the URL (:func:`client.connection.check_url`),
that every output file can be written (:func:`client.imaging.check_writable`), and the inputs: at most
:data:`client.imaging.MAX_IMAGE_PIXELS` pixels, 8 bits per channel (the picture may also be a 16-bit PNG),
turned upright as their EXIF orientation says, the mask the same size as the picture and not all black. The mask
is read as white or opaque = fill (:func:`client.imaging.load_mask`).

A 16-bit PNG picture is sent at 16 bits (:attr:`protocol.Plane.bits`) and its outputs are 16-bit PNGs (a non-PNG
output is reduced to 8 bits): the picture's own pixels exact, the fill at the engine's depth (16 bits from the
diffusion engines, 8-bit levels from OpenCV and MI-GAN: :attr:`protocol.EngineInfo.bits`). An 8-bit
picture stays 8-bit.

Exit status: 0 success, 1 the fill failed (daemon unreachable or reporting an error), 2 bad
arguments or input files, 130 cancelled.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from gimp_inpaint.client.expand import EXPAND_OPTIONS, ExpandOptions
from gimp_inpaint.protocol import (
    EDITOR_OPTIONS,
    FILL_OPTIONS,
    EditorOptions,
    ErrorCode,
    FillOptions,
    OptionSpec,
    ProtocolError,
    format_loras,
    parse_loras,
)

if TYPE_CHECKING:
    import numpy as np
    from gimp_inpaint.client.imaging import ArrayDocument
    from gimp_inpaint.client.metadata import RequestMetadata
    from gimp_inpaint.protocol import EngineInfo

# The modules each command needs are imported inside it: `fill` and `demo` NumPy and Pillow (client.imaging),
# `status` the connection (websockets, msgpack) but not NumPy, and `--help` only argparse and the options table
# (protocol.options; the protocol package imports its modules on first use). tests/test_cli.py checks that
# building the parser imports none of NumPy, Pillow, websockets or msgpack.

DEFAULT_URL = "ws://127.0.0.1:7869"
"""The daemon's default URL, shown in ``--help``: :data:`client.connection.DEFAULT_URL`, copied here so that the
help does not import websockets (``tests/test_cli.py`` checks that the two are equal)."""

APP_NAME = "gimp-inpaint"
"""The daemon's configuration folder's name, shown in ``--help``: :data:`daemon.config.APP_NAME`, copied so that
the help does not import the daemon's settings (and through them msgpack); tests check that they are equal."""

MAX_IMAGE_SIDE = 8192
"""Side of the largest square picture ``fill`` reads, shown in ``--help``: the square root of
:data:`client.imaging.MAX_IMAGE_PIXELS`, copied so that the help does not import NumPy and Pillow; tests check it."""

PNG_COMPRESSION = 1
"""Default ``--png-compression`` (zlib level 0…9 of PNG outputs): 1 writes a 2048² photo in a quarter to a third of
the time of Pillow's default (6), for a file about a fifth larger; the pixels are the same at every level."""

CLIENT_NAME = "gimp-inpaint-cli/0.1"
"""How this client introduces itself in the Hello (the daemon logs it)."""

ASSETS = Path(__file__).parent / "assets"
"""Folder of the demo's picture and mask (shipped as package data)."""

DEMO_IMAGE = ASSETS / "astronaut.png"
"""scikit-image's ``astronaut()`` (NASA, public domain), 512×512; see ``assets/README.md``."""
DEMO_MASK = ASSETS / "astronaut-patch-mask.png"
"""Mask of the round mission patch on the suit in :data:`DEMO_IMAGE`."""
DEMO_ENGINE = "opencv"
"""The demo's default engine: OpenCV's Telea inpainting needs no GPU and no model download."""

CLI_SKIPS = {"sample_merged": "a picture file is one layer, so what is visible is the layer itself"}
"""Options of the table without a CLI flag, each with its reason (``tests/test_options.py`` checks the rest)."""

EXPAND_SKIPS = {**CLI_SKIPS, "fill_mode": "Generative Expand always fills with the expand mode"}
"""Options of the table without a flag of ``expand``, each with its reason."""

DEMO_GROW, DEMO_FEATHER = 8, 4
"""The mask is grown by more than the feather so that the fade stays outside the patch (no ghost edge)."""

EXIT_FAILED = 1
"""Exit status when the fill failed: the daemon is unreachable or reported an error."""

EXIT_USAGE = 2
"""Exit status for bad arguments or input files (argparse uses 2 as well)."""

EXIT_CANCELLED = 130
"""Exit status after Ctrl+C (128 + SIGINT, the shell's convention)."""

TOKEN_HINT = ("Pass the daemon's token with --token, or --config-dir pointing at the daemon's configuration "
               "folder (the one holding its `token` file).")
"""Added to an ``UNAUTHORIZED`` error as a sentence of its own (:func:`client.fill.add_hint`): where the CLI
takes the token from."""


class UsageError(Exception):
    """Bad arguments or input files (exit status 2); the message is printed as is."""


def output_paths(output: Path, count: int) -> list[Path]:
    """``[output]`` for one variant, else ``output``'s stem + ``-1`` … ``-count`` + its suffix."""
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{k}{output.suffix}") for k in range(1, count + 1)]


def resolve_token(token: str | None, config_dir: Path | None) -> str:
    """``token`` if given, else the contents of ``<config_dir>/token`` (default: the daemon's config folder).

    Raises:
        UsageError: the token file is missing or unreadable.
    """
    if token:
        return token
    import platformdirs
    from gimp_inpaint.daemon.config import TOKEN_FILE

    path = (config_dir or Path(platformdirs.user_config_dir(APP_NAME))) / TOKEN_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"Cannot read the daemon's token at {path} ({exc.strerror or exc}). Start "
                         f"`gimp-inpaint-daemon` once (it creates the token), or pass --token or "
                         f"--config-dir.") from None


@contextmanager
def cancel_on_interrupt(event: threading.Event) -> Iterator[None]:
    """While active, the first Ctrl+C sets ``event`` (the job is cancelled cleanly); a second one interrupts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        event.set()
        signal.signal(signal.SIGINT, previous)
        print("Cancelling… (Ctrl+C again to quit at once)", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _number_of(spec: OptionSpec) -> Callable[[str], Any]:
    """The argparse ``type`` of a number option's flag: the text as an ``int`` or ``float`` (its range is checked
    by the record, :func:`options_from`, so that every bad value exits the same way)."""

    def parse(text: str) -> Any:
        try:
            return spec.type(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if spec.type is int else ' number'}") \
                from None

    parse.__name__ = spec.type.__name__  # argparse names the type in its error message
    return parse


def _flag_help(spec: OptionSpec) -> str:
    if spec.type is dict:
        return f"{spec.help}; repeat for several (`gimp-inpaint status` lists each engine's LoRAs)"
    if spec.type in (int, float):
        return f"{spec.help} ({spec.range_text}; default {spec.default:g})"
    if isinstance(spec.default, Enum):  # the enum options; their members have a label
        members = ", ".join(f"{m.value} ({getattr(m, 'label', m.value)})" for m in type(spec.default))
        return f"{spec.help}: {members} (default: {spec.default.value})"
    return f"{spec.help} (default {'on' if spec.default else 'off'})" if spec.type is bool else spec.help


class _AppendToGiven(argparse.Action):
    """``action="append"`` whose first use replaces the default list instead of adding to it, so that ``--lora``
    flags given replace LoRAs that ``--from`` made the default (argparse's own ``append`` keeps the default's)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        items = getattr(namespace, self.dest)
        setattr(namespace, self.dest, [*([] if items is self.default else items), values])


def add_option_flags(parser: argparse.ArgumentParser, rows: Iterable[OptionSpec] | None = None,
                     skips: Mapping[str, str] = CLI_SKIPS) -> None:
    """One flag per row of ``rows`` (default: :data:`protocol.FILL_OPTIONS` and :data:`protocol.EDITOR_OPTIONS`)
    but ``skips``: :attr:`protocol.OptionSpec.flag` and its aliases, the row's name as ``dest``, its default and
    type; LoRAs may repeat (``--lora a=0.5 --lora b``; given, they replace the default), an enum offers its values.
    Ranges are checked by the records when :func:`options_from` (or :func:`expand_options_from`) makes them."""
    for spec in (*FILL_OPTIONS.values(), *EDITOR_OPTIONS.values()) if rows is None else rows:
        if spec.name in skips:
            continue
        flags = (spec.flag, *spec.aliases)
        extra: dict[str, Any] = {}
        if spec.type is dict:
            extra = {"action": _AppendToGiven, "metavar": "NAME=WEIGHT", "default": []}
        elif spec.type is bool:
            extra = {"action": argparse.BooleanOptionalAction, "default": spec.default}
        elif isinstance(spec.default, Enum):
            extra = {"choices": [m.value for m in type(spec.default)], "default": spec.default.value}
        elif spec.type in (int, float):
            extra = {"type": _number_of(spec), "default": spec.default, "metavar": spec.type.__name__.upper()}
        elif spec.type is str:
            extra = {"default": spec.default}
        parser.add_argument(*flags, dest=spec.name, help=_flag_help(spec), **extra)


def options_from(args: argparse.Namespace) -> tuple[FillOptions, EditorOptions]:
    """The two records from the flags of :func:`add_option_flags`: the LoRA flags, each ``NAME=WEIGHT`` or a list
    ``a:0.5, b``, read as one list (:func:`protocol.parse_loras`); a row the command has no flag for (its skips) keeps
    its default.

    Raises:
        UsageError: a LoRA that cannot be read or is named twice, or a value the record refuses (out of range).
    """

    def values(rows: dict[str, OptionSpec]) -> dict[str, Any]:
        found = {name: getattr(args, name) for name in rows if name in vars(args)}
        return {name: parse_loras(", ".join(value)) if rows[name].type is dict else value
                for name, value in found.items()}

    try:
        return FillOptions(**values(FILL_OPTIONS)), EditorOptions(**values(EDITOR_OPTIONS))
    except ProtocolError as exc:
        raise UsageError(f"Invalid option: {exc.message}") from None


def flag_defaults(options: FillOptions, editor: EditorOptions) -> dict[str, Any]:
    """The values of :func:`add_option_flags`' flags (by ``dest``, the row's name) that make ``options`` and
    ``editor``, as parsed flags hold them: an enum's value, the LoRAs as one ``NAME:WEIGHT, …`` item
    (:func:`protocol.format_loras`; none as no item); rows without a flag (:data:`CLI_SKIPS`) are left out. The
    defaults of ``fill --from``."""
    values = {}
    for rows, record in ((FILL_OPTIONS, options), (EDITOR_OPTIONS, editor)):
        for name, spec in rows.items():
            value = getattr(record, name)
            if name in CLI_SKIPS:
                continue
            if spec.type is dict:
                values[name] = [format_loras(value)] if value else []
            else:
                values[name] = value.value if isinstance(value, Enum) else value
    return values


def read_recorded_request(path: Path) -> RequestMetadata:
    """The request recorded in the PNG ``path`` (:data:`client.metadata.PNG_TEXT_KEY`), for ``fill --from``; each
    note of :attr:`client.metadata.RequestMetadata.notes` is printed to stderr.

    Raises:
        UsageError: the file cannot be read, holds no request, or its request cannot be read (the message says
            why).
    """
    from gimp_inpaint.client.imaging import read_png_text
    from gimp_inpaint.client.metadata import PNG_TEXT_KEY, MetadataError, RequestMetadata

    try:
        text = read_png_text(path, PNG_TEXT_KEY)
    except (OSError, ValueError) as exc:
        raise UsageError(f"Cannot read {path}: {exc}") from None
    if text is None:
        raise UsageError(f"{path} holds no gimp-inpaint request: --from takes a PNG written by `gimp-inpaint fill` "
                         f"(its {PNG_TEXT_KEY!r} text chunk).")
    try:
        recorded = RequestMetadata.from_json(text)
    except MetadataError as exc:
        raise UsageError(f"Cannot use the request recorded in {path}: {exc.message}.") from None
    for note in recorded.notes:
        print(f"gimp-inpaint: note: {path}: {note}", file=sys.stderr)
    return recorded


def expand_options_from(args: argparse.Namespace) -> ExpandOptions:
    """``expand``'s :class:`client.expand.ExpandOptions` from its flags (the rows of
    :data:`client.expand.EXPAND_OPTIONS`).

    Raises:
        UsageError: a value the record refuses: out of range, a size or aspect ratio it cannot read, both set.
    """
    try:
        return ExpandOptions(**{name: getattr(args, name) for name in EXPAND_OPTIONS})
    except ProtocolError as exc:
        raise UsageError(f"Invalid option: {exc.message}") from None


def _positive_seconds(text: str) -> float:
    """The ``--timeout`` value: a positive, finite number of seconds.

    Raises:
        argparse.ArgumentTypeError: ``text`` is not a number, or is NaN, infinite, zero or negative.
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, got {text!r}")
    return value


def _png_level(text: str) -> int:
    """The ``--png-compression`` value: an integer 0…9.

    Raises:
        argparse.ArgumentTypeError: ``text`` is not one.
    """
    if text.strip() not in {str(level) for level in range(10)}:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 9, got {text!r}")
    return int(text)


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    """``-o/--output`` and ``--png-compression``: settings of the written files, not fill options (so not rows of
    the options table)."""
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the result")
    parser.add_argument("--png-compression", type=_png_level, default=PNG_COMPRESSION, metavar="0…9",
                        help="zlib compression level of PNG outputs, 0 (none) to 9 (smallest, slowest); other "
                             f"formats keep their defaults (default {PNG_COMPRESSION}: fast, a file about a fifth "
                             "larger than at Pillow's 6 with the same pixels)")


def build_parser(fill_defaults: Mapping[str, Any] | None = None) -> argparse.ArgumentParser:
    """The ``gimp-inpaint`` argument parser (subcommands ``fill``, ``expand``, ``demo``, ``status``, ``doctor`` and
    ``connect``);
    ``fill_defaults`` (:func:`flag_defaults`, by ``dest``) replace the defaults of ``fill``'s flags."""
    import platformdirs  # only the folder's name, shown in the help (a few milliseconds)

    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("daemon connection")
    group.add_argument("--url", help="daemon WebSocket URL (default: host and port of <config-dir>/daemon.toml, "
                                     f"else {DEFAULT_URL})")
    token = group.add_mutually_exclusive_group()
    token.add_argument("--token", help="the daemon's token (default: read from <config-dir>/token)")
    token.add_argument("--config-dir", type=Path,
                       help="the daemon's configuration folder holding `token` and `daemon.toml` (default: "
                            f"{platformdirs.user_config_dir(APP_NAME)})")
    group.add_argument("--timeout", type=_positive_seconds, default=5.0,
                       help="seconds to wait for the daemon to answer, > 0 (default 5)")
    group.add_argument("--fingerprint", metavar="SHA256",
                       help="for a wss:// URL: the daemon's certificate fingerprint, as it printed it at start "
                            "(default: the pin `gimp-inpaint connect` wrote for that URL into connection.json)")

    parser = argparse.ArgumentParser(prog="gimp-inpaint", description="Generative fill of image files through "
                                     "the gimp-inpaint daemon (start it with `gimp-inpaint-daemon`).",
                                     epilog="Exit status: 0 ok, 1 fill failed, 2 bad arguments, 130 cancelled.")
    commands = parser.add_subparsers(dest="command", required=True)

    fill = commands.add_parser("fill", parents=[connection], help="fill the masked area of an image",
                               description="Fill the area that MASK marks and write the "
                                           "result. With --num-variants N > 1 the outputs are OUT-1 … OUT-N. The mask "
                                           "rule is white or opaque = fill: the mask's luminance (white = fill, "
                                           "black = keep, gray = partly), or, for a mask drawn only in its alpha "
                                           "channel (one colour everywhere, the alpha varies), its alpha (opaque = "
                                           "fill, transparent = keep). Both files are turned upright as their EXIF "
                                           "orientation says; the result is written upright.")
    fill.add_argument("image", type=Path, help="the picture (any format Pillow reads, at most "
                                               f"{MAX_IMAGE_SIDE}×{MAX_IMAGE_SIDE} pixels)")
    fill.add_argument("mask", type=Path, help="the mask, same size: white or opaque = fill (see above)")
    _add_output_flags(fill)
    fill.add_argument("--from", dest="from_result", type=Path, metavar="RESULT.png",
                      help="take the option flags' defaults from the request recorded in a PNG that `gimp-inpaint "
                           "fill` wrote: the settings, engine and seed that made it, one variant (flags given here "
                           "still win)")
    add_option_flags(fill)
    fill.set_defaults(**(fill_defaults or {}))

    expand = commands.add_parser("expand", parents=[connection], help="grow the canvas of an image and fill the "
                                 "new area", description="Generative Expand: grow the canvas of IMAGE by --pixels "
                                 "on each of --sides, or to --size, or to --aspect, fill the new area (transparent "
                                 "until then) with the expand fill mode and write the grown picture. The result "
                                 "covers the new area and blends into the picture over grow + feather pixels; "
                                 "elsewhere the picture is kept exactly. With --num-variants N > 1 the outputs are "
                                 "OUT-1 … OUT-N.")
    expand.add_argument("image", type=Path, help="the picture (any format Pillow reads, at most "
                                                 f"{MAX_IMAGE_SIDE}×{MAX_IMAGE_SIDE} pixels)")
    _add_output_flags(expand)
    add_option_flags(expand, EXPAND_OPTIONS.values(), skips={})
    add_option_flags(expand, skips=EXPAND_SKIPS)

    demo = commands.add_parser("demo", parents=[connection], help="remove a patch from a bundled photo",
                               description="Remove the mission patch from the suit in scikit-image's astronaut "
                                           "photo with the opencv engine; also writes OUT's stem + "
                                           "'-before-after', the two pictures side by side.")
    _add_output_flags(demo)
    demo.add_argument("--engine", default=DEMO_ENGINE, help=f"daemon engine (default {DEMO_ENGINE})")

    commands.add_parser("status", parents=[connection], help="show the running daemon and its engines",
                        description="Connect to the daemon and print its version, device and a table of its "
                                    "engines: family, model, LoRAs, embedding tokens, refiner, availability. "
                                    "Exit status 1 when it cannot be reached or refuses the token.")

    doctor = commands.add_parser("doctor", help="check the installation and say what to fix",
                                 description="Check Python, the environment, torch against the GPU, GIMP, the "
                                             "plug-in and its connection.json, the daemon, its engines, the models "
                                             "and the free disk space; one line per check (ok, warning, broken "
                                             "→ fix). Exit status 1 when something is broken.")
    doctor.add_argument("--config-dir", type=Path,
                        help="the daemon's configuration folder (default: "
                             f"{platformdirs.user_config_dir(APP_NAME)})")

    connect = commands.add_parser("connect", help="point the plug-in at a daemon, e.g. on another machine",
                                  description="Check that the daemon at URL answers with TOKEN, pin its TLS "
                                              "certificate's fingerprint (wss://) and write URL, token and "
                                              "fingerprint into the plug-in's connection.json.")
    connect.add_argument("url", help="the daemon's URL, wss://HOST:PORT (ws:// for this machine only)")
    connect.add_argument("--token", required=True,
                         help="a token of that daemon (`gimp-inpaint-daemon token add NAME` prints one)")
    connect.add_argument("--fingerprint", metavar="SHA256",
                         help="the certificate fingerprint the daemon printed at start: checked, not trusted on "
                              "first use")
    connect.add_argument("--reset-fingerprint", action="store_true",
                         help="forget the fingerprint pinned for URL and pin the one the daemon presents now "
                              "(after the daemon's certificate changed on purpose)")
    connect.add_argument("--connection-file", type=Path, action="append", metavar="PATH",
                         help="the connection.json to write; repeatable (default: the installed plug-in's, in "
                              "every GIMP 3 configuration)")
    connect.add_argument("--timeout", type=_positive_seconds, default=5.0,
                         help="seconds to wait for the daemon to answer, > 0 (default 5)")
    return parser


def plugin_connection_files() -> list[Path]:
    """The ``connection.json`` of the plug-in in every GIMP 3 configuration where it is installed
    (:func:`installer.locations.find_gimp_configs`; the installer is imported here, in the commands that need it,
    as ``doctor`` does)."""
    from gimp_inpaint.installer.bundle import CONNECTION_FILE
    from gimp_inpaint.installer.locations import PLUGIN_NAME, find_gimp_configs

    return [folder / CONNECTION_FILE for config in find_gimp_configs()
            if (folder := config.plugin_dir / PLUGIN_NAME).is_dir()]


def stored_pin(url: str, files: Iterable[Path]) -> str | None:
    """The fingerprint pinned for ``url`` in the first of ``files`` that holds one
    (:meth:`client.connection.ConnectionConfig.fingerprint_for`); a file missing or unreadable is skipped."""
    from gimp_inpaint.client.connection import ClientError, read_connection_config

    for path in files:
        try:
            pin = read_connection_config(path).fingerprint_for(url)
        except ClientError:
            continue
        if pin is not None:
            return pin
    return None


def _pin(args: argparse.Namespace) -> str | None:
    """The fingerprint to check ``args.url``'s certificate against: ``--fingerprint``, else for a ``wss://`` URL
    the plug-in's pin for it (:func:`stored_pin`), else, for one on this machine, the fingerprint of the local
    daemon's own certificate file (:func:`client.local_daemon.configured_fingerprint`), else None.

    Raises:
        UsageError: the local daemon's ``daemon.toml`` is invalid (asked only for a loopback ``wss://`` URL).
    """
    from gimp_inpaint.client.connection import is_loopback_url

    if args.fingerprint or not args.url.startswith("wss://"):
        return args.fingerprint
    pin = stored_pin(args.url, plugin_connection_files())
    if pin is None and is_loopback_url(args.url):
        from gimp_inpaint.client.local_daemon import configured_fingerprint
        from gimp_inpaint.daemon.config import ConfigError

        try:
            pin = configured_fingerprint(args.config_dir)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    return pin


def _connect(args: argparse.Namespace) -> None:
    """``gimp-inpaint connect``: handshake (pinning on first use), then write every connection file.

    Raises:
        UsageError: no plug-in is installed and no ``--connection-file`` given, or a file cannot be written.
        ClientError: the URL is malformed, the daemon cannot be reached, refuses the token, or presents a
            certificate other than the one pinned (:class:`client.connection.CertificateChanged`).
    """
    from gimp_inpaint.client.connection import (
        ClientError,
        InpaintClient,
        read_connection_config,
        write_connection_config,
    )

    files = args.connection_file or plugin_connection_files()
    if not files:
        raise UsageError("No installed gimp-inpaint plug-in was found: install it with `gimp-inpaint-install`, or "
                         "name the connection.json to write with --connection-file.")
    pinned = args.fingerprint or (None if args.reset_fingerprint else stored_pin(args.url, files))
    with InpaintClient.connect(args.url, args.token, CLIENT_NAME, args.timeout, pinned,
                               trust_on_first_use=True) as client:
        welcome, fingerprint = client.welcome, client.fingerprint
    print(f"gimp-inpaint daemon {welcome.daemon_version} at {args.url} on {welcome.device} answers; token of "
          f"{welcome.token_owner or 'an unnamed owner'}, {len(welcome.engines)} engines")
    if fingerprint is not None:
        print(f"certificate SHA-256 {fingerprint}: " + (
            "as pinned" if pinned else "pinned on first use; check that it is the one the daemon printed at start "
                                       "(`listening on wss://… (certificate SHA-256 …)`)"))
    for path in files:
        try:
            command = read_connection_config(path).daemon_command
        except ClientError:  # none yet, or unreadable: written anew
            command = None
        try:
            write_connection_config(path, args.url, args.token, command, fingerprint)
        except OSError as exc:
            raise UsageError(f"Cannot write {path}: {exc.strerror or exc}.") from None
        print(f"wrote {path}")


def _doctor(args: argparse.Namespace) -> int:
    """Run :func:`installer.doctor.run_checks`, printing each line to stdout; 1 when one is broken, else 0.

    The installer package is imported here, not at module level: the command line is where the client and the
    installer meet (the client's modules never import the installer), and ``gimp-inpaint --help`` stays fast.
    """
    from gimp_inpaint.installer.doctor import doctor, run_checks

    return doctor(run_checks(args.config_dir), sys.stdout)


def _read_input(load: Callable[[Path], np.ndarray], path: Path) -> np.ndarray:
    """``load(path)`` (:func:`client.imaging.load_rgba` or :func:`client.imaging.load_mask`).

    Raises:
        UsageError: the file cannot be read (missing, not an image, too large, more than 8 bits per channel other
            than a 16-bit PNG picture).
    """
    try:
        return load(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"Cannot read the input: {exc}") from None


def _load_inputs(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    from gimp_inpaint.client.imaging import load_mask, load_rgba, mask_bounds

    image, mask = _read_input(load_rgba, image_path), _read_input(load_mask, mask_path)
    if mask.shape != image.shape[:2]:
        raise UsageError(f"The mask is {mask.shape[1]}×{mask.shape[0]} but the image is "
                         f"{image.shape[1]}×{image.shape[0]}; they must have the same size.")
    if mask_bounds(mask) is None:
        raise UsageError(f"The mask {mask_path} is all black: paint the area to fill white.")
    return image, mask


def _check_outputs(paths: Sequence[Path]) -> None:
    """Check that each of ``paths`` can be written (:func:`client.imaging.check_writable`), before any work.

    Raises:
        UsageError: one cannot; the message names it and says why.
    """
    from gimp_inpaint.client.imaging import check_writable

    for path in paths:
        try:
            check_writable(path)
        except OSError as exc:
            raise UsageError(f"Cannot write {path}: {exc.strerror or exc}.") from None
        except ValueError as exc:
            raise UsageError(f"Cannot write {path}: {exc}.") from None


def _save(path: Path, pixels: np.ndarray, png_compression: int = PNG_COMPRESSION,
          text: Mapping[str, str] | None = None) -> None:
    from gimp_inpaint.client.imaging import save_image

    try:
        save_image(path, pixels, png_compression=png_compression, text=text)
    except (OSError, ValueError) as exc:
        raise UsageError(f"Cannot write {path}: {exc}") from None


def _fill(document: ArrayDocument, args: argparse.Namespace, options: FillOptions, editor: EditorOptions,
          expansion: ExpandOptions | None = None) -> list[tuple[Path, np.ndarray]]:
    """Run the fill (:func:`client.fill.run_fill`), or Generative Expand with ``expansion``
    (:func:`client.fill.run_expand`: the document's picture grows), and write one file per variant
    (``--png-compression``); returns ``(path, picture)`` pairs."""
    from gimp_inpaint.client.connection import InpaintClient
    from gimp_inpaint.client.fill import run_expand, run_fill
    from gimp_inpaint.client.metadata import PNG_TEXT_KEY

    token = resolve_token(args.token, args.config_dir)

    pin = _pin(args)

    def connect() -> InpaintClient:
        return InpaintClient.connect(args.url, token, CLIENT_NAME, args.timeout, pin)

    with cancel_on_interrupt(document.cancel):
        if expansion is None:
            run_fill(document, connect, options, editor)
        else:
            run_expand(document, connect, options, editor, expansion)
    written = []
    for path, layer in zip(output_paths(args.output, len(document.layers)), document.layers, strict=True):
        picture = document.composite(layer)
        _save(path, picture, args.png_compression,
              {PNG_TEXT_KEY: layer.metadata.to_json()} if layer.metadata is not None else None)
        timings = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in layer.timings.items())
        print(f"{path}: seed {layer.seed}" + (f"; {timings}" if timings else ""), flush=True)
        written.append((path, picture))
    return written


ENGINE_COLUMNS = ("ENGINE", "FAMILY", "MODEL", "LORAS", "EMBEDDINGS", "REFINER", "LICENCE", "STATE")
"""Header of the ``status`` table (:func:`engine_table`)."""


def engine_table(engines: Sequence[EngineInfo]) -> list[str]:
    """The ``status`` table: a header line (:data:`ENGINE_COLUMNS`), then one line per engine, columns padded
    to their widest cell. FAMILY is the registry's model family (the engine kind, e.g. ``opencv``, when it has
    none); LORAS and EMBEDDINGS are comma-separated names and tokens (``-`` for none); REFINER is yes/no; LICENCE
    the model's licence where the daemon knows it, with "non-commercial use only" where it forbids commercial use
    (:attr:`protocol.EngineInfo.licence_note`; ``-`` when not known); STATE is ``available`` or
    ``unavailable: <detail>`` (an available engine's detail after a ``;``), or ``warming up`` while the daemon
    preloads it (:attr:`protocol.EngineInfo.warming_up`), last, so a long detail does not widen the table; a loaded
    model's quantization (:attr:`protocol.EngineInfo.quantization`) ends it as ``; quantization nf4+offload``.
    """
    rows = [ENGINE_COLUMNS] + [(
        engine.name, engine.family or engine.kind, engine.model, ", ".join(engine.loras) or "-",
        ", ".join(engine.embeddings) or "-", "yes" if engine.refiner else "no", engine.licence_note or "-",
        "warming up" if engine.warming_up and engine.available else
        (("available; " if engine.available else "unavailable: ") + engine.detail).rstrip(": ").rstrip("; ")
        + (f"; quantization {engine.quantization}" if engine.quantization else ""),
    ) for engine in engines]
    widths = [max(len(row[column]) for row in rows) for column in range(len(ENGINE_COLUMNS) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]])
            for row in rows]


def _status(args: argparse.Namespace) -> None:
    """Handshake with the daemon and print what it offers: one line, then :func:`engine_table`.

    Raises:
        UsageError: no token.
        ClientError: the daemon cannot be reached or refuses the handshake.
    """
    from gimp_inpaint.client.connection import InpaintClient

    token = resolve_token(args.token, args.config_dir)
    with InpaintClient.connect(args.url, token, CLIENT_NAME, args.timeout, _pin(args)) as client:
        welcome = client.welcome
    owner = f", token of {welcome.token_owner}" if welcome.token_owner else ""
    print(f"gimp-inpaint daemon {welcome.daemon_version} at {args.url} on {welcome.device}, "
          f"up to {welcome.max_pixels} pixels per request{owner}")
    for line in engine_table(welcome.engines):
        print(f"  {line}".rstrip())


def _url(args: argparse.Namespace) -> str:
    """``--url``, else the daemon's configured URL (:func:`client.local_daemon.configured_url`), checked by
    :func:`client.connection.check_url`.

    Raises:
        UsageError: the URL is malformed, or ``daemon.toml`` is invalid or sets no fixed port.
    """
    from gimp_inpaint.client.connection import ConnectionConfigError, check_url
    from gimp_inpaint.client.local_daemon import configured_url
    from gimp_inpaint.daemon.config import ConfigError

    try:
        return check_url(args.url or configured_url(args.config_dir))
    except (ConfigError, ConnectionConfigError) as exc:
        raise UsageError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gimp-inpaint``; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        return _doctor(args)
    from gimp_inpaint.client.connection import ClientError
    from gimp_inpaint.client.fill import FillError, add_hint

    try:
        if args.command == "fill" and args.from_result is not None:
            recorded = read_recorded_request(args.from_result)
            args = build_parser(flag_defaults(recorded.regenerate_options(), recorded.editor)).parse_args(argv)
        if args.command == "connect":
            _connect(args)
            return 0
        args.url = _url(args)
        if args.command == "status":
            _status(args)
            return 0
        if args.command == "demo":
            compare = args.output.with_name(f"{args.output.stem}-before-after{args.output.suffix}")
            _check_outputs([args.output, compare])
            image, mask = _load_inputs(DEMO_IMAGE, DEMO_MASK)
            options, editor = FillOptions(engine=args.engine, seed=0, grow=DEMO_GROW, feather=DEMO_FEATHER), \
                EditorOptions()
            expansion = None
        else:
            options, editor = options_from(args)
            expansion = expand_options_from(args) if args.command == "expand" else None
            _check_outputs(output_paths(args.output, options.num_variants))
            if expansion is None:
                image, mask = _load_inputs(args.image, args.mask)
            else:
                import numpy as np
                from gimp_inpaint.client.imaging import load_rgba

                image = _read_input(load_rgba, args.image)
                mask = np.zeros(image.shape[:2], np.uint8)  # no selection: Generative Expand makes its own
        from gimp_inpaint.client.imaging import ArrayDocument

        document = ArrayDocument(image, mask)
        written = _fill(document, args, options, editor, expansion)
        if args.command == "demo":
            import numpy as np

            _save(compare, np.concatenate([image, written[0][1]], axis=1), args.png_compression)
            print(f"{compare}: before (left) and after (right)", flush=True)
    except UsageError as exc:
        print(f"gimp-inpaint: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (FillError, ClientError) as exc:  # ClientError from `status`; the fill wraps it in a FillError
        code = getattr(exc, "code", None)  # DaemonUnavailable has none
        if code is ErrorCode.CANCELLED:
            print("gimp-inpaint: cancelled", file=sys.stderr)
            return EXIT_CANCELLED
        message = add_hint(exc.message, TOKEN_HINT) if code is ErrorCode.UNAUTHORIZED else exc.message
        print(f"gimp-inpaint: error: {message}", file=sys.stderr)
        return EXIT_USAGE if code is ErrorCode.INVALID_REQUEST else EXIT_FAILED
    except KeyboardInterrupt:
        print("gimp-inpaint: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    return 0


if __name__ == "__main__":
    sys.exit(main())
