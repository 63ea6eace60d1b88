"""The run-time dialog of Generative Fill and Generative Expand, and the progress window of an interactive run
(GTK 3 through ``GimpUi``; GIMP's plug-in process only).

:func:`run_dialog` shows the procedure's arguments (:mod:`plugin_gimp.arguments`, the options tables' rows) built at
run time: the prompts first, Generative Expand's own rows, then the engine as a list the daemon gives when the dialog
opens (its handshake's :class:`protocol.EngineInfo`: family, state, licence note; the last list kept for when no
daemon runs), the variants and the seed with a *Random* toggle; every other row under *Advanced*. Only the rows the
chosen engine takes show, with its family's steps and guidance (:mod:`plugin_gimp.dialog_model` decides; this module
only builds widgets). Accepting writes the values into the procedure's config, so GIMP keeps them for *Repeat*, the
shortcut's next run and the next dialog.

:class:`ProgressWindow` is the job's window: the picture forming (the daemon's previews), the step count, the time
left and a Cancel button that cancels the job through the client (the protocol's Cancel; the daemon stops at its
next step, nothing is pasted). :class:`WindowDocument` is the GIMP document whose progress, cancel and previews are
that window's. Non-interactive runs keep GIMP's status-bar progress (:class:`plugin_gimp.gimp_document.GimpDocument`).

Why ``GimpUi.Dialog`` with GTK widgets rather than ``GimpUi.ProcedureDialog``: the procedure dialog makes one widget
per argument from its param spec, so the engine would be a text field (the daemon's list is known only at run time,
a ``Gimp.Choice`` is fixed at registration) and it has no way to hide a row when another row changes (only to make
one insensitive); a dialog of plain GTK widgets fills its engine list from the daemon and shows exactly the chosen
engine's rows, and the values still persist through the same config.

A test hook, for the real-GIMP GUI test only: when the environment variable :data:`UI_TEST_HOOK` names a Python
file, its ``dialog_opened(dialog)`` and ``progress_opened(window)`` (either may be missing) are called with the
live :class:`FillDialog` and :class:`ProgressWindow` once they show, and drive them through their public methods
(:meth:`FillDialog.state`, :meth:`FillDialog.select_engine`, :meth:`FillDialog.respond`,
:meth:`ProgressWindow.cancel`, ``screenshot``…) from GLib timeouts. Unset, nothing is loaded.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
gi.require_version("Gdk", "3.0")
gi.require_version("GdkPixbuf", "2.0")
from gi.repository import Gdk, GdkPixbuf, Gimp, GimpUi, GLib, Gtk  # noqa: E402 - gi.require_version must come first
from gimp_inpaint.protocol import DEFAULT_PREVIEW_EVERY, EngineInfo, OptionSpec, Preview, Rect  # noqa: E402

from .arguments import SERVER_URL, Record, argument_kind, choices, record_arguments  # noqa: E402
from .dialog_model import (  # noqa: E402
    RANDOM_SEED,
    EngineEntry,
    EngineListing,
    TimeLeft,
    Visibility,
    engine_entries,
    engine_note,
    list_engines,
    load_engines,
    preview_size,
    sections,
    status_line,
    switch_engine,
    time_left_text,
    values_to_send,
    visibility,
)
from .gimp_document import GimpDocument, eight_bit_rgba  # noqa: E402

UI_TEST_HOOK = "GIMP_INPAINT_UI_TEST"
"""Environment variable naming the GUI test's driver file (see the module docstring); unset in normal use."""

PROMPT_LINES = 3
"""Height of the prompt boxes, in lines of text."""

PREVIEW_BOX = 256
"""Side of the square the progress window shows the forming picture in (pixels), and the previews' size asked of
the daemon (:attr:`WindowDocument.preview_size`)."""

NOTE_CHARS = 64
"""Widest the wrapped lines under the engine list and in the status line get (characters)."""

ADVANCED_HEIGHT = 240
"""Tallest the open *Advanced* part gets before it scrolls (pixels): with every row of a diffusion engine the dialog
would be taller than a 800-pixel screen."""


def config_value(config: Gimp.ProcedureConfig, argument: str) -> Any:
    """The value of ``argument`` in ``config``; one that reads as ``None`` is the registration's default (GIMP hands
    empty-string defaults over as ``None`` when it registers the procedure from its cached ``pluginrc``)."""
    value = config.get_property(argument)
    return config.find_property(argument).get_default_value() if value is None else value


def _hook(name: str) -> Callable[[Any], None] | None:
    """The GUI test driver's function ``name`` (:data:`UI_TEST_HOOK`), or None."""
    path = os.environ.get(UI_TEST_HOOK)
    if not path:
        return None
    module = _DRIVERS.get(path)
    if module is None:
        spec = importlib.util.spec_from_file_location("gimp_inpaint_ui_test_driver", path)
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _DRIVERS[path] = module
    return getattr(module, name, None)


_DRIVERS: dict[str, ModuleType] = {}
"""The driver modules :func:`_hook` loaded, by path (loaded once per plug-in process)."""


def screenshot(window: Gtk.Window, path: str) -> None:
    """Save what ``window`` shows (its X window's pixels, no decorations) as a PNG at ``path``."""
    gdk_window = window.get_window()
    pixbuf = Gdk.pixbuf_get_from_window(gdk_window, 0, 0, gdk_window.get_width(), gdk_window.get_height())
    pixbuf.savev(path, "png", [], [])


def _pump() -> None:
    """Handle the GTK events waiting (redraws, clicks, the test driver's timeouts): the job runs in this thread and
    calls this between the daemon's messages, at least every ``poll_interval`` (0.1 s) of
    :meth:`client.connection.InpaintClient.inpaint`."""
    while Gtk.events_pending():
        Gtk.main_iteration_do(False)


def _label(text: str, css: str = "") -> Gtk.Label:
    """A left-aligned label that wraps at :data:`NOTE_CHARS` characters; ``css`` a style class (``"dim-label"``)."""
    label = Gtk.Label(label=text, xalign=0.0, wrap=True, max_width_chars=NOTE_CHARS)
    if css:
        label.get_style_context().add_class(css)
    return label


class _Row:
    """One argument's label and value widget, as its kind (:func:`plugin_gimp.arguments.argument_kind`) wants."""

    def __init__(self, spec: OptionSpec, value: Any) -> None:
        self.spec = spec
        kind = argument_kind(spec)
        self.label: Gtk.Label | None = None if kind == "boolean" else Gtk.Label.new_with_mnemonic(spec.label)
        self.widget: Gtk.Widget  # what the grid holds
        self._value: Gtk.Widget  # what holds the value (inside ``widget`` for the seed and the prompts)
        self._random: Gtk.CheckButton | None = None
        self._text: Gtk.TextBuffer | None = None
        if spec.name == "seed":
            self.widget, self._value = self._seed(value)
        elif kind == "choice":
            combo = Gtk.ComboBoxText()
            for nick, text in choices(spec):
                combo.append(nick, text)
            self.widget = self._value = combo
        elif kind == "boolean":
            self.widget = self._value = Gtk.CheckButton.new_with_mnemonic(spec.label)
        elif kind in ("int", "double"):
            self.widget = self._value = self._spin(spec)
        elif spec.name in ("prompt", "negative_prompt"):
            view = Gtk.TextView(wrap_mode=Gtk.WrapMode.WORD_CHAR, accepts_tab=False)
            self._text = view.get_buffer()
            scrolled = Gtk.ScrolledWindow(hexpand=True)
            scrolled.set_policy(Gtk.PolicyType.NEVER, Gtk.PolicyType.AUTOMATIC)
            scrolled.set_shadow_type(Gtk.ShadowType.IN)
            line = view.create_pango_layout("Ag").get_pixel_size()[1]
            scrolled.set_size_request(-1, PROMPT_LINES * line + 8)
            scrolled.add(view)
            self.widget, self._value = scrolled, view
        else:
            entry = Gtk.Entry(hexpand=True)
            if spec.max_chars:
                entry.set_max_length(spec.max_chars)
            self.widget = self._value = entry
        if self.label is not None:
            self.label.set_xalign(0.0)
            self.label.set_mnemonic_widget(self._value)
        self.widget.set_tooltip_text(spec.help)
        self.set(value)

    @staticmethod
    def _spin(spec: OptionSpec, minimum: float | None = None) -> Gtk.SpinButton:
        """A spin button over the row's range; floats with 2 decimals up to a maximum of 2, else 1."""
        low = spec.minimum if minimum is None else minimum
        high = spec.maximum
        assert low is not None and high is not None  # every number row has a range
        if spec.type is int:
            adjustment = Gtk.Adjustment(lower=low, upper=high, step_increment=1, page_increment=10)
            return Gtk.SpinButton(adjustment=adjustment, digits=0, numeric=True, hexpand=True)
        digits = 2 if high <= 2 else 1
        step = 10 ** -digits
        adjustment = Gtk.Adjustment(lower=low, upper=high, step_increment=step, page_increment=10 * step)
        return Gtk.SpinButton(adjustment=adjustment, digits=digits, numeric=True, hexpand=True)

    def _seed(self, value: int) -> tuple[Gtk.Widget, Gtk.SpinButton]:
        """The seed's box: a *Random* toggle (seed :data:`dialog_model.RANDOM_SEED`) and the seed itself."""
        spin = self._spin(self.spec, minimum=0)
        self._random = Gtk.CheckButton(label="Random")
        self._random.set_tooltip_text("A new seed each run (the seed a result got is in its layer's name)")
        self._random.connect("toggled", lambda button: spin.set_sensitive(not button.get_active()))
        box = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=12)
        box.pack_start(self._random, False, False, 0)
        box.pack_start(spin, True, True, 0)
        return box, spin

    def get(self) -> Any:
        """The value as GIMP holds it (a choice's nick, an int for an int row)."""
        widget = self._value
        if self._random is not None:
            return RANDOM_SEED if self._random.get_active() else int(widget.get_value())
        if isinstance(widget, Gtk.ComboBoxText):
            return widget.get_active_id()
        if isinstance(widget, Gtk.CheckButton):
            return widget.get_active()
        if isinstance(widget, Gtk.SpinButton):
            widget.update()  # a number typed but not yet confirmed counts
            return int(widget.get_value()) if self.spec.type is int else round(widget.get_value(), widget.get_digits())
        if self._text is not None:
            return self._text.get_text(self._text.get_start_iter(), self._text.get_end_iter(), False)
        return widget.get_text()

    def set(self, value: Any) -> None:
        """Show ``value`` (as GIMP holds it)."""
        widget = self._value
        if self._random is not None:
            self._random.set_active(value == RANDOM_SEED)
            widget.set_sensitive(value != RANDOM_SEED)
            if value != RANDOM_SEED:
                widget.set_value(value)
        elif isinstance(widget, Gtk.ComboBoxText):
            widget.set_active_id(value)
        elif isinstance(widget, Gtk.CheckButton):
            widget.set_active(bool(value))
        elif isinstance(widget, Gtk.SpinButton):
            widget.set_value(value)
        elif self._text is not None:
            self._text.set_text(value or "")
        else:
            widget.set_text(value or "")

    def show_as(self, how: Visibility) -> None:
        """Show, grey out or hide the label and the widget together."""
        for part in (self.label, self.widget):
            if part is not None:
                part.set_visible(how is not Visibility.HIDDEN)
                part.set_sensitive(how is Visibility.SHOWN)


@dataclass(frozen=True)
class DaemonAccess:
    """Where the dialog asks for the engines (:func:`plugin_gimp.dialog_model.list_engines`).

    Attributes:
        connection_file: the plug-in's ``connection.json`` (URL, token, the daemon's command).
        client_name: sent in the Hello.
        cache: where the last engine list is kept, for a dialog opened while no daemon runs.
    """

    connection_file: Path
    client_name: str
    cache: Path


class FillDialog:
    """The dialog of one run; :func:`run_dialog` makes and runs it.

    Args:
        title: the window's title (the procedure's name, e.g. "Generative Fill").
        arguments: the procedure's arguments, in registration order.
        values: the value of each, by argument name, as GIMP holds them.
        daemon: where to ask for the engines.
        follow_defaults: let the engine's family defaults replace values still at the table's defaults when the
            engine list first arrives (False for values pre-filled from a request, which are exactly what ran).
    """

    def __init__(self, title: str, arguments: Sequence[OptionSpec], values: Mapping[str, Any],
                 daemon: DaemonAccess, follow_defaults: bool = True) -> None:
        self._arguments = list(arguments)
        self._daemon = daemon
        self._closed = False
        self._listing_done = False
        self._follow_defaults = follow_defaults
        self._entries: list[EngineEntry] = []
        self._info_known = False  # whether the engine list reached the dialog yet (cached or live)
        self._filling = False  # the engine list is being refilled: its "changed" signals are not the user's
        self._current_info: EngineInfo | None = None
        self._response: Gtk.ResponseType | None = None
        use_header_bar = Gtk.Settings.get_default().get_property("gtk-dialogs-use-header")
        self.window = GimpUi.Dialog(title=title, role="gimp-inpaint", use_header_bar=use_header_bar)
        self.window.add_button("_Cancel", Gtk.ResponseType.CANCEL)
        self.window.add_button("_OK", Gtk.ResponseType.OK)
        self.window.set_default_response(Gtk.ResponseType.OK)
        GimpUi.window_set_transient(self.window)

        visible, advanced = sections(self._arguments)
        self._rows = {spec.argument: _Row(spec, values[spec.argument]) for spec in self._arguments
                      if spec.name != "engine"}
        self._engine_spec = next((spec for spec in self._arguments if spec.name == "engine"), None)
        self._engine_value = values.get(self._engine_spec.argument, "") if self._engine_spec else ""
        self._engine_combo = Gtk.ComboBoxText(hexpand=True)
        self._engine_note = _label("", "dim-label")
        self._status = _label("")

        self._labels = Gtk.SizeGroup(mode=Gtk.SizeGroupMode.HORIZONTAL)  # one label column for both parts
        box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=12, border_width=12)
        box.pack_start(self._grid(visible), False, False, 0)
        self._expander = Gtk.Expander(label="Advanced")
        self._scrolled = Gtk.ScrolledWindow(propagate_natural_height=True, max_content_height=ADVANCED_HEIGHT)
        self._scrolled.set_policy(Gtk.PolicyType.NEVER, Gtk.PolicyType.AUTOMATIC)
        self._advanced = self._grid(advanced)
        self._advanced.set_margin_top(6)
        self._scrolled.add(self._advanced)
        self._expander.add(self._scrolled)
        self._expander.connect("notify::expanded", lambda *_: GLib.idle_add(self._fit))
        box.pack_start(self._expander, False, False, 0)
        box.pack_start(Gtk.Separator(), False, False, 0)
        box.pack_start(self._status, False, False, 0)
        self.window.get_content_area().pack_start(box, True, True, 0)

        url = values.get(SERVER_URL.argument) or ""
        kept = load_engines(daemon.cache)
        self._apply(EngineListing(url, kept[2] if kept else None, live=False, saved_at=kept[1] if kept else None))
        self._status.set_text("Asking the daemon for its engines…")
        self._engine_combo.connect("changed", self._engine_changed)
        threading.Thread(target=self._ask, args=(url,), name="gimp-inpaint engines", daemon=True).start()

    def _grid(self, specs: Sequence[OptionSpec]) -> Gtk.Grid:
        """The rows of ``specs``: label in the first column, widget in the second; the engine with its note."""
        grid = Gtk.Grid(row_spacing=6, column_spacing=12)
        line = 0
        for spec in specs:
            if spec.name == "engine":
                label = Gtk.Label.new_with_mnemonic(spec.label)
                label.set_xalign(0.0)
                label.set_mnemonic_widget(self._engine_combo)
                self._labels.add_widget(label)
                self._engine_combo.set_tooltip_text(spec.help)
                grid.attach(label, 0, line, 1, 1)
                grid.attach(self._engine_combo, 1, line, 1, 1)
                grid.attach(self._engine_note, 1, line + 1, 1, 1)
                line += 2
                continue
            row = self._rows[spec.argument]
            if row.label is not None:
                row.label.set_valign(Gtk.Align.START if spec.name in ("prompt", "negative_prompt")
                                     else Gtk.Align.CENTER)
                self._labels.add_widget(row.label)
                grid.attach(row.label, 0, line, 1, 1)
            grid.attach(row.widget, 1, line, 1, 1)
            line += 1
        return grid

    # --- the engine list ---

    def _ask(self, url: str) -> None:
        """Thread: ask the daemon (:func:`dialog_model.list_engines`), then hand the answer to the main loop."""
        listing = list_engines(self._daemon.connection_file, url, self._daemon.client_name, self._daemon.cache)
        GLib.idle_add(self._answered, listing)

    def _answered(self, listing: EngineListing) -> bool:
        """Main loop: show the daemon's answer (unless the dialog closed meanwhile); False: run once."""
        if not self._closed:
            if listing.welcome is not None or not self._entries:
                self._apply(listing)
            self._status.set_text(status_line(listing))
            self._listing_done = True
        return False

    def _apply(self, listing: EngineListing) -> None:
        """Fill the engine list from ``listing``, keeping the engine chosen, and show its rows."""
        chosen = self._selected().name if self._entries else self._engine_value
        self._entries = engine_entries(listing.engines, chosen)
        self._filling = True
        self._engine_combo.remove_all()
        for entry in self._entries:
            self._engine_combo.append_text(entry.label)
        self._engine_combo.set_active(next(i for i, entry in enumerate(self._entries) if entry.name == chosen))
        self._filling = False
        self._show_engine(initial=not self._info_known)
        self._info_known = self._info_known or listing.welcome is not None

    def _selected(self) -> EngineEntry:
        return self._entries[max(self._engine_combo.get_active(), 0)]

    def _engine_changed(self, combo: Gtk.ComboBoxText) -> None:
        if not self._filling and combo.get_active() >= 0:
            self._show_engine(initial=False)

    def _show_engine(self, initial: bool) -> None:
        """Show the chosen engine's note and rows; its family's defaults replace values still at the previous
        engine's (:func:`dialog_model.switch_engine`), except at the start of a pre-filled dialog."""
        entry = self._selected()
        info = entry.info
        if not (initial and not self._follow_defaults):
            previous = None if initial else self._current_info
            for argument, value in switch_engine(self._arguments, self.values(), previous, info).items():
                self._rows[argument].set(value)
        self._current_info = info
        self._engine_note.set_text(engine_note(entry))
        for row in self._rows.values():
            row.show_as(visibility(row.spec, info))
        loras = self._rows.get("loras")
        if loras is not None and info is not None and info.loras:
            loras.widget.set_tooltip_text(f"{loras.spec.help}. This engine's: {', '.join(info.loras)}")
        self._fit()

    def _fit(self) -> bool:
        """Size the window to the rows now shown: the *Advanced* part as tall as its rows up to
        :data:`ADVANCED_HEIGHT` (a window keeps its size when its content grows past a scrolled part's minimum, and
        shrinks to its minimum), then the smallest window that holds it all. False: as an idle callback, once."""
        natural = self._advanced.get_preferred_height()[1]
        self._scrolled.set_min_content_height(min(ADVANCED_HEIGHT, natural))
        self.window.resize(1, 1)
        return False

    # --- values ---

    def values(self) -> dict[str, Any]:
        """Every argument's value as the dialog shows it now, by argument name."""
        values = {argument: row.get() for argument, row in self._rows.items()}
        if self._engine_spec is not None:
            values[self._engine_spec.argument] = self._selected().name if self._entries else self._engine_value
        return values

    def result(self) -> dict[str, Any]:
        """The values to run with and keep (:func:`dialog_model.values_to_send`: rows the engine does not take at
        their defaults)."""
        return values_to_send(self._arguments, self.values(), self._current_info)

    # --- running, and what the GUI test drives ---

    def run(self) -> bool:
        """Show the dialog until OK (True) or Cancel / closing it (False)."""
        self.window.show_all()
        for row in self._rows.values():
            row.show_as(visibility(row.spec, self._current_info))
        self._fit()
        driver = _hook("dialog_opened")
        if driver is not None:
            driver(self)
        response = self.window.run()
        self._closed = True
        return bool(response == Gtk.ResponseType.OK)

    def destroy(self) -> None:
        """Close the window."""
        self._closed = True
        self.window.destroy()

    def state(self) -> dict[str, Any]:
        """What the dialog shows, for the GUI test: the engine list's names, the chosen one, the rows shown, greyed
        out and hidden (argument names, the engine's included), the status line, whether the daemon answered yet,
        and every value."""
        shown: list[str] = []
        greyed: list[str] = []
        hidden: list[str] = []
        for argument, row in self._rows.items():
            target = hidden if not row.widget.get_visible() else shown if row.widget.get_sensitive() else greyed
            target.append(argument)
        if self._engine_spec is not None:
            shown.insert(0, self._engine_spec.argument)
        return {"engines": [entry.name for entry in self._entries], "engine": self._selected().name,
                "engine_labels": [entry.label for entry in self._entries], "note": self._engine_note.get_text(),
                "shown": shown, "insensitive": greyed, "hidden": hidden, "status": self._status.get_text(),
                "answered": self._listing_done, "advanced_expanded": self._expander.get_expanded(),
                "values": self.values()}

    def select_engine(self, name: str) -> None:
        """Choose the engine ``name`` in the list, as a click would.

        Raises:
            StopIteration: the list has no such engine.
        """
        self._engine_combo.set_active(next(i for i, entry in enumerate(self._entries) if entry.name == name))

    def set_value(self, argument: str, value: Any) -> None:
        """Put ``value`` into ``argument``'s widget, as typing would."""
        self._rows[argument].set(value)

    def expand_advanced(self, expanded: bool = True) -> None:
        """Open or close the *Advanced* expander."""
        self._expander.set_expanded(expanded)

    def respond(self, ok: bool) -> None:
        """Press OK (``ok``) or Cancel."""
        self.window.response(Gtk.ResponseType.OK if ok else Gtk.ResponseType.CANCEL)

    def screenshot(self, path: str) -> None:
        """Save the dialog as it shows now as a PNG at ``path``."""
        screenshot(self.window, path)


def run_dialog(config: Gimp.ProcedureConfig, title: str, arguments: Sequence[OptionSpec], daemon: DaemonAccess,
               records: Sequence[Record] | None = None) -> bool:
    """Show the run-time dialog for a procedure's ``config``; on OK write its values into ``config`` and return True
    (GIMP keeps them as the procedure's last values once the run succeeds); False when cancelled.

    Args:
        config: the run's procedure config (its values fill the dialog).
        title: the window's title.
        arguments: the procedure's arguments (:func:`plugin_gimp.arguments.procedure_arguments` or
            :func:`plugin_gimp.arguments.expand_arguments`).
        daemon: where to ask for the engine list.
        records: option records to fill the dialog with instead of ``config``'s values (a layer's request, for
            "Edit and Regenerate…": :class:`protocol.FillOptions`, :class:`protocol.EditorOptions`, and for Expand
            :class:`client.expand.ExpandOptions`); the rows they lack keep ``config``'s values, and the engine's
            family defaults do not replace theirs.

    ``GimpUi.init`` must have run.
    """
    values = {spec.argument: config_value(config, spec.argument) for spec in arguments}
    if records is not None:
        values.update(record_arguments(arguments, records))
    dialog = FillDialog(title, arguments, values, daemon, follow_defaults=records is None)
    try:
        accepted = dialog.run()
        if accepted:
            for argument, value in dialog.result().items():
                config.set_property(argument, value)
    finally:
        dialog.destroy()
    return accepted


class ProgressWindow:
    """The window of a running job: the picture forming, the progress text (stage, step count), the time left and
    a Cancel button (:meth:`cancel_requested`). It lives in the plug-in's main thread, which runs the job: every
    update handles the GTK events waiting (:func:`_pump`).

    Args:
        title: the window's title.
    """

    def __init__(self, title: str) -> None:
        self._cancelled = False
        self._time_left = TimeLeft()
        use_header_bar = Gtk.Settings.get_default().get_property("gtk-dialogs-use-header")
        self.window = GimpUi.Dialog(title=title, role="gimp-inpaint-progress", use_header_bar=use_header_bar)
        self._cancel = self.window.add_button("_Cancel", Gtk.ResponseType.CANCEL)
        self.window.connect("response", self._responded)
        self.window.connect("delete-event", self._closing)
        GimpUi.window_set_transient(self.window)
        self._picture = Gtk.Image()
        self._picture.set_size_request(PREVIEW_BOX, PREVIEW_BOX)
        self._bar = Gtk.ProgressBar(show_text=True)
        self._bar.set_text("Starting…")
        self._left = _label("", "dim-label")
        box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=8, border_width=12)
        box.pack_start(self._picture, False, False, 0)
        box.pack_start(self._bar, False, False, 0)
        box.pack_start(self._left, False, False, 0)
        self.window.get_content_area().pack_start(box, True, True, 0)
        self.window.show_all()
        self._preview_step: tuple[int, int] | None = None
        _pump()
        driver = _hook("progress_opened")
        if driver is not None:
            driver(self)

    def _responded(self, window: Gtk.Dialog, response: int) -> None:
        if response == Gtk.ResponseType.CANCEL:
            self.cancel()

    def _closing(self, window: Gtk.Dialog, event: Gdk.Event) -> bool:
        """Closing the window cancels the job; the window stays until the job ended (True: not destroyed)."""
        self.cancel()
        return True

    def cancel(self) -> None:
        """Ask the job to stop, as the Cancel button does: :meth:`cancel_requested` turns True."""
        if not self._cancelled:
            self._cancelled = True
            self._cancel.set_sensitive(False)
            self._bar.set_text("Cancelling…")

    def progress(self, fraction: float, text: str) -> None:
        """Show ``fraction`` (0…1) of the job done with ``text`` ("Generating… step 3 of 25") and the time left."""
        if not self._cancelled:
            self._bar.set_fraction(min(max(fraction, 0.0), 1.0))
            self._bar.set_text(text)
            self._left.set_text(time_left_text(self._time_left.update(fraction, time.monotonic())))
        _pump()

    def show_picture(self, width: int, height: int, rgba: bytes | memoryview) -> None:
        """Show ``width × height`` R'G'B'A u8 pixels (the crop the job reads, then its previews), scaled to fit the
        :data:`PREVIEW_BOX` square."""
        pixbuf = GdkPixbuf.Pixbuf.new_from_bytes(GLib.Bytes.new(bytes(rgba)), GdkPixbuf.Colorspace.RGB, True, 8,
                                                 width, height, width * 4)
        shown = preview_size(width, height, PREVIEW_BOX)
        self._picture.set_from_pixbuf(pixbuf.scale_simple(*shown, GdkPixbuf.InterpType.BILINEAR))
        _pump()

    def show_preview(self, width: int, height: int, rgba: bytes | memoryview, step: int, total: int) -> None:
        """Show a preview of the crop: ``width × height`` R'G'B'A u8 pixels after step ``step`` of ``total``."""
        self._preview_step = (step, total)
        self.show_picture(width, height, rgba)

    def cancel_requested(self) -> bool:
        """True once the user pressed Cancel or closed the window (handles the waiting events first)."""
        _pump()
        return self._cancelled

    def state(self) -> dict[str, Any]:
        """What the window shows, for the GUI test: the progress text and fraction, the time left, the last preview's
        step and total (None before the first) and its size on screen, and whether Cancel was pressed."""
        pixbuf = self._picture.get_pixbuf()
        return {"text": self._bar.get_text(), "fraction": self._bar.get_fraction(), "time_left": self._left.get_text(),
                "preview_step": self._preview_step, "cancelled": self._cancelled,
                "preview_size": [pixbuf.get_width(), pixbuf.get_height()] if pixbuf is not None else None}

    def screenshot(self, path: str) -> None:
        """Save the window as it shows now as a PNG at ``path``."""
        screenshot(self.window, path)

    def close(self) -> None:
        """Close the window."""
        self.window.destroy()
        _pump()


class WindowDocument(GimpDocument):
    """A :class:`plugin_gimp.gimp_document.GimpDocument` whose progress, cancel and previews are a
    :class:`ProgressWindow`'s instead of GIMP's status bar (interactive runs)."""

    def __init__(self, image: Gimp.Image, source: Gimp.Layer, window: ProgressWindow) -> None:
        super().__init__(image, source)
        self._window = window

    def read_rgba(self, rect: Rect) -> bytes:
        """The source layer's pixels in ``rect``, also shown in the window: the crop the job is about to send, the
        picture its previews then replace."""
        pixels = super().read_rgba(rect)
        self._window.show_picture(rect.width, rect.height, eight_bit_rgba(pixels, self.bits))
        return pixels

    def read_visible(self, rect: Rect) -> bytes:
        """The visible picture in ``rect``, also shown in the window (as :meth:`read_rgba`)."""
        pixels = super().read_visible(rect)
        self._window.show_picture(rect.width, rect.height, eight_bit_rgba(pixels, self.bits))
        return pixels

    def progress(self, fraction: float, text: str) -> None:
        """The window's progress bar and time left."""
        self._window.progress(fraction, text)

    def cancel_requested(self) -> bool:
        """True once the window's Cancel was pressed."""
        return self._window.cancel_requested()

    @property
    def preview_every(self) -> int:
        """:data:`protocol.DEFAULT_PREVIEW_EVERY`: the window shows the picture forming at the usual rate."""
        return DEFAULT_PREVIEW_EVERY

    @property
    def preview_size(self) -> int:
        """:data:`PREVIEW_BOX`, the side of the window's picture."""
        return PREVIEW_BOX

    def show_preview(self, preview: Preview) -> None:
        """The window's picture, step and total."""
        image = preview.image
        self._window.show_preview(image.width, image.height, image.data, preview.step, preview.total)
