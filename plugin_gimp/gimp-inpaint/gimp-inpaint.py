#!/usr/bin/env python3
"""GIMP 3 plug-in: ``python-fu-gimp-inpaint``, *Filters ▸ Generative ▸ Generative Fill…*, and
``python-fu-gimp-inpaint-expand``, *Filters ▸ Generative ▸ Generative Expand…*.

Generative Fill fills the selection of the selected layer with a result from the gimp-inpaint daemon, as new
layers (one per variant) with the feathered selection as layer mask, in one undo step. Generative Expand grows the
canvas (pixels on chosen sides, a target size or an aspect ratio) and fills the new area the same way, the canvas
resize and the layers in one undo step. The work is done by :func:`client.fill.run_fill` and
:func:`client.fill.run_expand`; this file registers the procedures, shows their run-time dialog and then the job's
progress window with its Cancel button (INTERACTIVE runs, :mod:`plugin_gimp.dialog`; *Repeat* reuses the last values
without a dialog and shows GIMP's status-bar progress) and turns every failure into an ``EXECUTION_ERROR`` with a
message (GIMP drops the message of an uncaught exception); a cancelled job returns ``CANCEL``.

Installed layout (``python -m gimp_inpaint.installer install``)::

    <plug-ins>/gimp-inpaint/gimp-inpaint.py   this file, executable
    <plug-ins>/gimp-inpaint/connection.json   daemon URL and token
    <plug-ins>/gimp-inpaint/vendor/           gimp_inpaint/{protocol,client,plugin_gimp}, msgpack, websockets
"""

import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
"""The plug-in's folder (``<plug-ins>/gimp-inpaint`` when installed)."""

sys.path.insert(0, str(HERE / "vendor"))  # the vendored copies win over any of GIMP's

import gi  # noqa: E402 - the vendored packages must be on sys.path first

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gimp, GimpUi, GLib, GObject  # noqa: E402
from gimp_inpaint.client.connection import InpaintClient, connect_or_start, read_connection_config  # noqa: E402
from gimp_inpaint.client.fill import FillError, add_hint, require_selection, run_expand, run_fill  # noqa: E402
from gimp_inpaint.plugin_gimp.arguments import (  # noqa: E402
    SERVER_URL,
    Record,
    argument_kind,
    choices,
    expand_arguments,
    gimp_default,
    procedure_arguments,
    read_expand_options,
    read_options,
)
from gimp_inpaint.plugin_gimp.dialog import (  # noqa: E402
    DaemonAccess,
    ProgressWindow,
    WindowDocument,
    config_value,
    run_dialog,
)
from gimp_inpaint.plugin_gimp.gimp_document import GimpDocument, source_layer  # noqa: E402
from gimp_inpaint.protocol import ErrorCode, OptionSpec, ProtocolError  # noqa: E402

PROCEDURE = "python-fu-gimp-inpaint"
"""The PDB name of Generative Fill (also the action name the installer binds a shortcut to)."""

EXPAND_PROCEDURE = "python-fu-gimp-inpaint-expand"
"""The PDB name of Generative Expand (also the action name the installer binds its shortcut to)."""

CONNECTION_FILE = HERE / "connection.json"
"""The daemon's URL, token and start command, written by the installer
(:func:`client.connection.read_connection_config`)."""

DAEMON_OUTPUT = Path(GLib.get_user_cache_dir(), "gimp-inpaint", "daemon-start.log")
"""Where a daemon the plug-in starts writes its output (:func:`client.connection.connect_or_start`): the user's
cache folder, not the plug-in's, which the installer replaces while that daemon may still hold the file open."""

CLIENT_NAME = "gimp-inpaint-plugin/0.1"
"""How the plug-in introduces itself in the Hello (the daemon logs it)."""

ENGINE_CACHE = ("gimp-inpaint", "engines.msgpack")
"""Where the dialog keeps the daemon's last engine list, for a dialog opened while no daemon runs: this path inside
GIMP's configuration folder (``Gimp.directory()``, one per GIMP version), beside the procedures' last values."""

_TOKEN_HINT = ("Re-run `gimp-inpaint-install` (python -m gimp_inpaint.installer install) so the plug-in gets "
               "the daemon's current token.")
"""Added to an ``UNAUTHORIZED`` error as a sentence of its own (:func:`client.fill.add_hint`)."""

Records = TypeVar("Records", bound=tuple[Any, ...])
"""The records a procedure's arguments are read as (:func:`_read`)."""


def _read(config: Gimp.ProcedureConfig, read: Callable[[Callable[[str], object]], Records],
          what: str) -> Records:
    """The procedure's arguments as its options records: ``read`` (:func:`plugin_gimp.arguments.read_options` or
    :func:`plugin_gimp.arguments.read_expand_options`) over the config's values.

    An argument that reads as ``None`` gets its default from this plug-in's own registration (the config's param
    spec, made by :meth:`GimpInpaint.do_create_procedure`): on every GIMP start after the one that followed the
    install, GIMP registers the procedure from its cached ``pluginrc``, which hands empty-string defaults over as
    ``None``, so a scripted call that leaves such an argument unset passes ``None``.

    Raises:
        FillError: the LoRA text, a target size or an aspect ratio cannot be read, or a value is out of its range
            (the message names ``what``, e.g. "generative fill").
    """

    try:
        return read(lambda name: config_value(config, name))
    except ProtocolError as exc:
        raise FillError(f"Invalid {what} settings: {exc.message}", exc.code) from None


def _error(procedure: Gimp.Procedure, text: str) -> Gimp.ValueArray:
    """``EXECUTION_ERROR`` return values carrying ``text`` as the GLib.Error message GIMP shows."""
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(text))


Work = Callable[[GimpDocument, Callable[[], InpaintClient], Gimp.ProcedureConfig], object]
"""What a procedure does once its dialog was accepted: ``work(document, connect, config)``."""


def daemon_access() -> DaemonAccess:
    """Where the dialog asks for the engines: :data:`CONNECTION_FILE`, :data:`CLIENT_NAME`, :data:`ENGINE_CACHE`."""
    return DaemonAccess(CONNECTION_FILE, CLIENT_NAME, Path(Gimp.directory(), *ENGINE_CACHE))


def _run(procedure: Gimp.Procedure, run_mode: Gimp.RunMode, image: Gimp.Image, drawables: list[Gimp.Drawable],
         config: Gimp.ProcedureConfig, title: str, arguments: Sequence[OptionSpec], work: Work,
         needs_selection: bool, records: Sequence[Record] | None = None) -> Gimp.ValueArray:
    """A procedure's body: the layer check (and the selection's, with ``needs_selection``), then for an interactive
    run the dialog titled ``title`` over ``arguments`` (pre-filled from ``records`` when given,
    :func:`plugin_gimp.dialog.run_dialog`) and the progress window, then ``work``; never raises. Without one
    selected layer (or a needed selection) it fails before the dialog opens.

    The progress window's Cancel cancels the job through the client (``CANCEL`` is returned, nothing was pasted).
    Cancelling from GIMP's status bar (non-interactive runs) kills this process (see :mod:`plugin_gimp.gimp_document`);
    a daemon it started runs on in its own session.
    """
    window: ProgressWindow | None = None
    try:
        layer = source_layer(drawables, title)
        document: GimpDocument = GimpDocument(image, layer)
        if needs_selection:
            require_selection(document)
        if run_mode == Gimp.RunMode.INTERACTIVE:
            GimpUi.init(procedure.get_name())
            if not run_dialog(config, title, arguments, daemon_access(), records):
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
            window = ProgressWindow(title)
            document = WindowDocument(image, layer, window)
        server_url = config.get_property(SERVER_URL.argument)

        def connect() -> InpaintClient:  # starts the daemon when none answers on this machine
            return connect_or_start(read_connection_config(CONNECTION_FILE), CLIENT_NAME, DAEMON_OUTPUT,
                                    url=server_url or None, on_status=lambda text: document.progress(0.0, text))

        try:
            work(document, connect, config)
        finally:
            if window is not None:
                window.close()
            else:
                Gimp.progress_end()
    except FillError as exc:
        if exc.code is ErrorCode.CANCELLED:
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        return _error(procedure, add_hint(exc.message, _TOKEN_HINT) if exc.code is ErrorCode.UNAUTHORIZED
                      else exc.message)
    except Exception as exc:  # a bug: report it, or GIMP shows a failure without any message
        traceback.print_exc()
        return _error(procedure, f"{title} failed unexpectedly: {type(exc).__name__}: {exc}")
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def run(procedure: Gimp.Procedure, run_mode: Gimp.RunMode, image: Gimp.Image, drawables: list[Gimp.Drawable],
        config: Gimp.ProcedureConfig, run_data: None) -> Gimp.ValueArray:
    """Generative Fill (``Gimp.RunImageFunc``: ``drawables`` are the selected drawables, ``config`` holds the
    arguments, ``run_data`` is what :meth:`GimpInpaint.do_create_procedure` registered, None): :func:`run_fill`
    on the selection, which it needs."""

    def work(document: GimpDocument, connect: Callable[[], InpaintClient], values: Gimp.ProcedureConfig) -> None:
        run_fill(document, connect, *_read(values, read_options, "generative fill"))

    return _run(procedure, run_mode, image, drawables, config, "Generative Fill", procedure_arguments(), work,
                needs_selection=True)


def run_expand_procedure(procedure: Gimp.Procedure, run_mode: Gimp.RunMode, image: Gimp.Image,
                         drawables: list[Gimp.Drawable], config: Gimp.ProcedureConfig, run_data: None,
                         ) -> Gimp.ValueArray:
    """Generative Expand (``Gimp.RunImageFunc``, as :func:`run`): :func:`run_expand`; the selection plays no part."""

    def work(document: GimpDocument, connect: Callable[[], InpaintClient], values: Gimp.ProcedureConfig) -> None:
        run_expand(document, connect, *_read(values, read_expand_options, "generative expand"))

    return _run(procedure, run_mode, image, drawables, config, "Generative Expand", expand_arguments(), work,
                needs_selection=False)


class GimpInpaint(Gimp.PlugIn):
    """Registers :data:`PROCEDURE` and :data:`EXPAND_PROCEDURE` (arguments, defaults and ranges from the options
    tables)."""

    def do_query_procedures(self) -> list[str]:
        """The procedures this plug-in installs: :data:`PROCEDURE` and :data:`EXPAND_PROCEDURE`."""
        return [PROCEDURE, EXPAND_PROCEDURE]

    def do_set_i18n(self, name: str) -> bool:
        """False: the plug-in ships no translations (GIMP then does not look for a gettext catalogue)."""
        return False

    def do_create_procedure(self, name: str) -> Gimp.Procedure:
        """Build the ``Gimp.ImageProcedure`` ``name``: menu entry (both in *Filters ▸ Generative*), image types,
        documentation and one argument per row of its options tables
        (:func:`plugin_gimp.arguments.procedure_arguments` for :data:`PROCEDURE`, run by :func:`run`;
        :func:`plugin_gimp.arguments.expand_arguments` for :data:`EXPAND_PROCEDURE`, run by
        :func:`run_expand_procedure`)."""
        flags = GObject.ParamFlags.READWRITE
        expand = name == EXPAND_PROCEDURE
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN,
                                            run_expand_procedure if expand else run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label("Generative _Expand…" if expand else "Generative _Fill…")
        procedure.add_menu_path("<Image>/Filters/Generative")
        if expand:
            procedure.set_documentation(
                "Grow the canvas and fill the new area with generated pixels",
                "Grows the canvas by the pixels to add on the chosen sides, or to a target size or aspect ratio "
                "(the layers keep their size; the new area is transparent), sends the new area and the picture "
                "beside it to the gimp-inpaint daemon and adds the result as a new layer above the selected layer, "
                "covering the new area and blending into the picture. Undo restores the canvas and removes the "
                "layers in one step.", name)
        else:
            procedure.set_documentation(
                "Fill the selection with generated pixels",
                "Sends the selection and the pixels around it to the gimp-inpaint daemon (started on this machine "
                "when none answers, with the command the installer recorded) and adds each result as a new layer "
                "above the selected layer, masked by the feathered selection. Undo removes all of them in one "
                "step.", name)
        procedure.set_attribution("gimp-inpaint authors", "gimp-inpaint authors", "2026")
        for spec in expand_arguments() if expand else procedure_arguments():  # the tables' rows, the server URL
            kind, default = argument_kind(spec), gimp_default(spec)
            if kind == "choice":
                choice = Gimp.Choice.new()
                for index, (nick, label) in enumerate(choices(spec)):
                    choice.add(nick, index, label, "")
                procedure.add_choice_argument(spec.argument, spec.label, spec.help, choice, default, flags)
            elif kind in ("int", "double"):
                add = procedure.add_int_argument if kind == "int" else procedure.add_double_argument
                add(spec.argument, spec.label, spec.help, spec.minimum, spec.maximum, default, flags)
            elif kind == "boolean":
                procedure.add_boolean_argument(spec.argument, spec.label, spec.help, default, flags)
            else:
                procedure.add_string_argument(spec.argument, spec.label, spec.help, default, flags)
        return procedure


Gimp.main(GimpInpaint.__gtype__, sys.argv)
