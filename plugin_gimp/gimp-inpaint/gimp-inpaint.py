#!/usr/bin/env python3
"""GIMP 3 plug-in: ``python-fu-gimp-inpaint``, *Filters ▸ Generative ▸ Generative Fill…*,
``python-fu-gimp-inpaint-expand``, *Filters ▸ Generative ▸ Generative Expand…*, and on a result layer
``python-fu-gimp-inpaint-more-like-this`` and ``python-fu-gimp-inpaint-edit-and-regenerate``, *Generative Fill ▸ More
Like This* and *Generative Fill ▸ Edit and Regenerate…* (in the *Layer* menu and the Layers dock's context menu).

Generative Fill fills the selection of the selected layer with a result from the gimp-inpaint daemon, as new
layers (one per variant) with the feathered selection as layer mask, in one undo step. Generative Expand grows the
canvas (pixels on chosen sides, a target size or an aspect ratio) and fills the new area the same way, the canvas
resize and the layers in one undo step. The work is done by :func:`client.fill.run_fill` and
:func:`client.fill.run_expand`; this file registers the procedures, shows their run-time dialog and then the job's
progress window with its Cancel button (INTERACTIVE runs, :mod:`plugin_gimp.dialog`; *Repeat* reuses the last values
without a dialog and shows GIMP's status-bar progress) and turns every failure into an ``EXECUTION_ERROR`` with a
message (GIMP drops the message of an uncaught exception); a cancelled job returns ``CANCEL``.

Every result layer carries its request as a parasite (:mod:`client.metadata`, :mod:`plugin_gimp.gimp_document`).
*More Like This* fills that request's selection again with the same settings and ``num-variants`` new seeds (default
2; no dialog in any run mode, the progress window in an interactive run). The new seeds are consecutive, as a
request's variants' are, and start at the first seed after the chosen layer's from which none of them is a seed its
lineage already used (:func:`client.metadata.next_seed`): no result is repeated, and two runs give four new ones.
*Edit and Regenerate…* opens the Generative Fill dialog pre-filled with the layer's request (its engine, its seed,
one variant); a non-interactive or *Repeat* run takes the arguments given instead. Both read the picture as the
lineage's first fill saw it (its results hidden), from the layer below them, fill the selection recorded with the
layer (*Edit and Regenerate…*: the image's selection when there is one), add the new layers directly above the
chosen one in one undo step, and keep its lineage.

Installed layout (``python -m gimp_inpaint.installer install``)::

    <plug-ins>/gimp-inpaint/gimp-inpaint.py   this file, executable
    <plug-ins>/gimp-inpaint/connection.json   daemon URL and token
    <plug-ins>/gimp-inpaint/vendor/           gimp_inpaint/{protocol,client,plugin_gimp}, msgpack, websockets
"""

import dataclasses
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
from gimp_inpaint.client.metadata import next_seed  # noqa: E402
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
from gimp_inpaint.plugin_gimp.gimp_document import (  # noqa: E402
    GimpDocument,
    ResultOrigin,
    result_origin,
    source_layer,
)
from gimp_inpaint.protocol import FILL_OPTIONS, ErrorCode, OptionSpec, ProtocolError  # noqa: E402

PROCEDURE = "python-fu-gimp-inpaint"
"""The PDB name of Generative Fill (also the action name the installer binds a shortcut to)."""

EXPAND_PROCEDURE = "python-fu-gimp-inpaint-expand"
"""The PDB name of Generative Expand (also the action name the installer binds its shortcut to)."""

MORE_PROCEDURE = "python-fu-gimp-inpaint-more-like-this"
"""The PDB name of More Like This (on a result layer)."""

EDIT_PROCEDURE = "python-fu-gimp-inpaint-edit-and-regenerate"
"""The PDB name of Edit and Regenerate… (on a result layer)."""

RESULT_MENUS = ("<Image>/Layer/Generative Fill", "<Layers>/Generative Fill")
"""Where the procedures on a result layer are: a *Generative Fill* submenu of the image window's *Layer* menu and of
the Layers dock's context menu."""

MORE_VARIANTS = dataclasses.replace(FILL_OPTIONS["num_variants"], default=2, label="_Variants",
                                    help="New results to generate beside the chosen one, one layer each")
"""More Like This's one argument but the server URL: the options table's ``num_variants`` row (its name and range),
default 2."""

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


Work = Callable[[GimpDocument, Callable[[], InpaintClient], Gimp.ProcedureConfig, ResultOrigin | None], object]
"""What a procedure does once its dialog was accepted: ``work(document, connect, config, origin)`` (``origin``: the
chosen result layer's, for the procedures on one; else None)."""


def daemon_access() -> DaemonAccess:
    """Where the dialog asks for the engines: :data:`CONNECTION_FILE`, :data:`CLIENT_NAME`, :data:`ENGINE_CACHE`."""
    return DaemonAccess(CONNECTION_FILE, CLIENT_NAME, Path(Gimp.directory(), *ENGINE_CACHE))


def _run(procedure: Gimp.Procedure, run_mode: Gimp.RunMode, image: Gimp.Image, drawables: list[Gimp.Drawable],
         config: Gimp.ProcedureConfig, title: str, arguments: Sequence[OptionSpec], work: Work,
         needs_selection: bool, on_result: bool = False, dialog: bool = True) -> Gimp.ValueArray:
    """A procedure's body: the layer check (and the selection's, with ``needs_selection``), then for an interactive
    run the dialog titled ``title`` over ``arguments`` (unless not ``dialog``; :func:`plugin_gimp.dialog.run_dialog`)
    and the progress window, then ``work``; never raises. Without one selected layer (or a needed selection) it fails
    before the dialog opens.

    With ``on_result`` the selected layer must be a result layer (:func:`plugin_gimp.gimp_document.result_origin`):
    the document reads from the layer its lineage was made from and adds the new layers above it
    (:meth:`plugin_gimp.gimp_document.GimpDocument.regenerate`), and the dialog is pre-filled from its request
    (:meth:`client.metadata.RequestMetadata.regenerate_options` and its editor options).

    The progress window's Cancel cancels the job through the client (``CANCEL`` is returned, nothing was pasted).
    Cancelling from GIMP's status bar (non-interactive runs) kills this process (see :mod:`plugin_gimp.gimp_document`);
    a daemon it started runs on in its own session.
    """
    window: ProgressWindow | None = None
    try:
        origin = result_origin(image, drawables, title) if on_result else None
        layer = source_layer(drawables, title) if origin is None else origin.source
        document: GimpDocument = GimpDocument(image, layer)
        if needs_selection:
            require_selection(document)
        if run_mode == Gimp.RunMode.INTERACTIVE:
            GimpUi.init(procedure.get_name())
            records: list[Record] | None = None if origin is None else [origin.request.regenerate_options(),
                                                                         origin.request.editor]
            if dialog and not run_dialog(config, title, arguments, daemon_access(), records):
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
            window = ProgressWindow(title)
            document = WindowDocument(image, layer, window)
        if origin is not None:
            document.regenerate(origin)
        server_url = config.get_property(SERVER_URL.argument)

        def connect() -> InpaintClient:  # starts the daemon when none answers on this machine
            return connect_or_start(read_connection_config(CONNECTION_FILE), CLIENT_NAME, DAEMON_OUTPUT,
                                    url=server_url or None, on_status=lambda text: document.progress(0.0, text))

        try:
            work(document, connect, config, origin)
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

    def work(document: GimpDocument, connect: Callable[[], InpaintClient], values: Gimp.ProcedureConfig,
             origin: ResultOrigin | None) -> None:
        run_fill(document, connect, *_read(values, read_options, "generative fill"))

    return _run(procedure, run_mode, image, drawables, config, "Generative Fill", procedure_arguments(), work,
                needs_selection=True)


def run_more_like_this(procedure: Gimp.Procedure, run_mode: Gimp.RunMode, image: Gimp.Image,
                       drawables: list[Gimp.Drawable], config: Gimp.ProcedureConfig, run_data: None,
                       ) -> Gimp.ValueArray:
    """More Like This (``Gimp.RunImageFunc``, as :func:`run`): the chosen result's request again, on its recorded
    selection, with ``num-variants`` new seeds (:func:`client.metadata.next_seed` from its seed + 1, past its
    lineage's), no dialog."""

    def work(document: GimpDocument, connect: Callable[[], InpaintClient], values: Gimp.ProcedureConfig,
             origin: ResultOrigin | None) -> None:
        assert origin is not None  # _run made it (on_result)
        count = config_value(values, MORE_VARIANTS.argument)
        request = origin.request
        options = request.regenerate_options(seed=next_seed(request.seed + 1, origin.seeds, count),
                                             num_variants=count)
        run_fill(document, connect, options, request.editor, selection=request.selection, origin=request.origin)

    return _run(procedure, run_mode, image, drawables, config, "More Like This", [], work, needs_selection=False,
                on_result=True, dialog=False)


def run_edit_and_regenerate(procedure: Gimp.Procedure, run_mode: Gimp.RunMode, image: Gimp.Image,
                            drawables: list[Gimp.Drawable], config: Gimp.ProcedureConfig, run_data: None,
                            ) -> Gimp.ValueArray:
    """Edit and Regenerate… (``Gimp.RunImageFunc``, as :func:`run`): the Generative Fill dialog pre-filled from the
    chosen result's request, then a fill of the image's selection, or of the recorded one when there is none."""

    def work(document: GimpDocument, connect: Callable[[], InpaintClient], values: Gimp.ProcedureConfig,
             origin: ResultOrigin | None) -> None:
        assert origin is not None  # _run made it (on_result)
        options, editor = _read(values, read_options, "edit and regenerate")
        recorded = None if document.selection_bounds() is not None else origin.request.selection
        run_fill(document, connect, options, editor, selection=recorded, origin=origin.request.origin)

    return _run(procedure, run_mode, image, drawables, config, "Edit and Regenerate", procedure_arguments(), work,
                needs_selection=False, on_result=True)


def run_expand_procedure(procedure: Gimp.Procedure, run_mode: Gimp.RunMode, image: Gimp.Image,
                         drawables: list[Gimp.Drawable], config: Gimp.ProcedureConfig, run_data: None,
                         ) -> Gimp.ValueArray:
    """Generative Expand (``Gimp.RunImageFunc``, as :func:`run`): :func:`run_expand`; the selection plays no part."""

    def work(document: GimpDocument, connect: Callable[[], InpaintClient], values: Gimp.ProcedureConfig,
             origin: ResultOrigin | None) -> None:
        run_expand(document, connect, *_read(values, read_expand_options, "generative expand"))

    return _run(procedure, run_mode, image, drawables, config, "Generative Expand", expand_arguments(), work,
                needs_selection=False)


@dataclasses.dataclass(frozen=True)
class Registration:
    """What :meth:`GimpInpaint.do_create_procedure` registers for one procedure: its run function, menu label and
    menus, documentation (blurb, help) and arguments (:class:`protocol.OptionSpec` rows)."""

    run: Callable[..., Gimp.ValueArray]
    label: str
    menus: tuple[str, ...]
    blurb: str
    help: str
    arguments: Callable[[], Sequence[OptionSpec]]


REGISTRATIONS = {
    PROCEDURE: Registration(
        run, "Generative _Fill…", ("<Image>/Filters/Generative",), "Fill the selection with generated pixels",
        "Sends the selection and the pixels around it to the gimp-inpaint daemon (started on this machine when none "
        "answers, with the command the installer recorded) and adds each result as a new layer above the selected "
        "layer, masked by the feathered selection. Undo removes all of them in one step.", procedure_arguments),
    EXPAND_PROCEDURE: Registration(
        run_expand_procedure, "Generative _Expand…", ("<Image>/Filters/Generative",),
        "Grow the canvas and fill the new area with generated pixels",
        "Grows the canvas by the pixels to add on the chosen sides, or to a target size or aspect ratio (the layers "
        "keep their size; the new area is transparent), sends the new area and the picture beside it to the "
        "gimp-inpaint daemon and adds the result as a new layer above the selected layer, covering the new area and "
        "blending into the picture. Undo restores the canvas and removes the layers in one step.", expand_arguments),
    MORE_PROCEDURE: Registration(
        run_more_like_this, "More _Like This", RESULT_MENUS,
        "Generate more results like the selected result layer, with new seeds",
        "Runs the request recorded with the selected result of Generative Fill again (its settings, engine and "
        "selection, the picture as that fill saw it) with new seeds, none of its lineage's, and adds the new results "
        "directly above it, in one undo step. No dialog.", lambda: [MORE_VARIANTS, SERVER_URL]),
    EDIT_PROCEDURE: Registration(
        run_edit_and_regenerate, "_Edit and Regenerate…", RESULT_MENUS,
        "Change the settings of the selected result layer and generate it again",
        "Opens the Generative Fill dialog with the settings recorded with the selected result of Generative Fill "
        "(its engine and seed, one variant) and fills the selection again with what you set: the image's selection, "
        "or the recorded one when nothing is selected; the new results go directly above the result, in one undo "
        "step. Run non-interactively, it takes the arguments given.", procedure_arguments),
}
"""Every procedure of the plug-in, by PDB name."""


class GimpInpaint(Gimp.PlugIn):
    """Registers the procedures of :data:`REGISTRATIONS` (arguments, defaults and ranges from the options tables)."""

    def do_query_procedures(self) -> list[str]:
        """The procedures this plug-in installs: :data:`PROCEDURE`, :data:`EXPAND_PROCEDURE`, :data:`MORE_PROCEDURE`
        and :data:`EDIT_PROCEDURE`."""
        return list(REGISTRATIONS)

    def do_set_i18n(self, name: str) -> bool:
        """False: the plug-in ships no translations (GIMP then does not look for a gettext catalogue)."""
        return False

    def do_create_procedure(self, name: str) -> Gimp.Procedure:
        """Build the ``Gimp.ImageProcedure`` ``name`` from its :class:`Registration`: menu entries, image types, one
        selected drawable, documentation and one argument per row (:func:`plugin_gimp.arguments.procedure_arguments`
        for Generative Fill and Edit and Regenerate…, :func:`plugin_gimp.arguments.expand_arguments` for Generative
        Expand, :data:`MORE_VARIANTS` and the server URL for More Like This)."""
        flags = GObject.ParamFlags.READWRITE
        registration = REGISTRATIONS[name]
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, registration.run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label(registration.label)
        for menu in registration.menus:
            procedure.add_menu_path(menu)
        procedure.set_documentation(registration.blurb, registration.help, name)
        procedure.set_attribution("gimp-inpaint authors", "gimp-inpaint authors", "2026")
        for spec in registration.arguments():  # the tables' rows, the server URL
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
