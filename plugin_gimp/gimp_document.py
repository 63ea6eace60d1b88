"""GIMP 3 implementation of :class:`client.document.Document` (PyGObject: ``Gimp``, ``Gegl``).

Runs in GIMP's plug-in process only. The calls follow the GIMP 3.0.4 API as verified headless
(``/work/shared/recipes/gimp3-api-notes.md`` in the project's research; GIMP's own
``plug-ins/python`` examples): layer pixels are read as ``R'G'B'A u8`` in LAYER coordinates, the
selection as ``Y u8`` (linear coverage, GIMP's native selection format), and result layers are
written through their DIRECT buffer (the shadow buffer route is clipped by the active selection).

Image types: RGB and GRAY, any precision. Babl converts on read and write: a gray layer reads as
R'G'B'A (R = G = B), and a gray image gets GRAYA result layers written from the RGBA bytes.

Precision (issue 12): an image of 8-bit precision is read and written as ``R'G'B'A u8``; an image of any deeper
precision (16 or 32-bit integer, half, float or double: ``Gimp.Image.get_precision``) as ``R'G'B'A u16``, so the
crop travels at 16 bits (:attr:`protocol.Plane.bits`) and the result layers, which ``Gimp.Layer.new`` makes at the
image's precision, get 16-bit pixels (babl converts them to a float image's format on write). Babl's ``u16`` is
the machine's byte order; the protocol's is little-endian (:func:`little_endian` swaps on a big-endian machine).

Cancelling: GIMP 3.0 gives a plug-in no way to notice that the user cancelled its progress, so
:meth:`GimpDocument.cancel_requested` keeps the default False. The progress that ``Gimp.progress_init``
starts is cancellable (the Cancel button of the image window's status bar), but its "cancel" signal
is handled in the core: ``gimp_plug_in_progress_cancel_callback`` (``app/plug-in/gimpplugin-progress.c``)
sets the procedure's return status to CANCEL and calls ``gimp_plug_in_close (plug_in, TRUE)``, which
writes GP_QUIT to the plug-in and 10 ms later kills its process (group) with SIGKILL
(``app/plug-in/gimpplugin.c``); no Python code runs. Nor does the API offer a query (GIMP 3.0.4's
``Gimp`` module, introspected): ``Gimp.progress_install_vtable`` makes the plug-in the progress display
of the procedures *it* calls, and its ``Gimp.ProgressVtable`` has ``start``, ``end``, ``set_text``,
``set_value``, ``pulse`` and ``get_window_handle``, no cancel callback; ``Gimp.progress_cancel`` asks
the core to cancel such a progress, and the core's handler (``gimp_plug_in_progress_cancel``) does
nothing and returns FALSE.

The user's cancel still works end to end: the kill closes the plug-in's WebSocket, the daemon
cancels that connection's jobs (the running one at the engine's next step; tested with a killed
client process in ``tests/test_client.py``), and nothing was pasted, as the layers are added only
after the whole result arrived.

That is the path of non-interactive runs (*Repeat*, scripts), which use this class. An interactive run shows the
plug-in's own progress window instead, whose Cancel sends the protocol's Cancel and ends the run cleanly
(:class:`plugin_gimp.dialog.WindowDocument`, a subclass).

Results that remember (issue 12): each result layer gets the parasite :data:`client.metadata.PARASITE_NAME`, its
request as JSON (:class:`client.metadata.RequestMetadata`), persistent (saved in the XCF file), attached in the
layers' undo group: ``Gimp.Parasite.new(name, Gimp.PARASITE_PERSISTENT, bytes)`` and ``Gimp.Item.attach_parasite``,
read back with ``Gimp.Item.get_parasite`` (whose ``get_data`` gives a list of byte values), the same in GIMP 3.0.4
and 3.2.6. :func:`result_origin` finds what *More Like This* and *Edit and Regenerate…* need around a selected result
layer, and :meth:`GimpDocument.regenerate` makes the document read the picture as it was before that lineage's
results and add the new layers beside them. ``Gimp.Image.duplicate`` copies the parasites but not the tattoos (3.0.4
and 3.2.6 number the copy's items anew), so a layer of the image is found in its copy by its place in the layer tree
(:func:`_tree_path`).
"""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402 - gi.require_version must come first
from gimp_inpaint.client.document import Document, ResultLayer  # noqa: E402
from gimp_inpaint.client.fill import FillError  # noqa: E402
from gimp_inpaint.client.metadata import PARASITE_NAME, MetadataError, RequestMetadata  # noqa: E402
from gimp_inpaint.protocol import CanvasExpansion, Rect  # noqa: E402

RGBA_FORMAT = "R'G'B'A u8"
"""Babl format of the pixels exchanged with the daemon: sRGB-encoded 8-bit RGBA, straight alpha."""

RGBA_FORMATS = {8: RGBA_FORMAT, 16: "R'G'B'A u16"}
"""Babl format of the pixels exchanged with the daemon at each depth (:attr:`protocol.Plane.bits`): sRGB-encoded
RGBA, straight alpha, 8 or 16 bits a sample."""

EIGHT_BIT_PRECISIONS = (Gimp.Precision.U8_LINEAR, Gimp.Precision.U8_NON_LINEAR, Gimp.Precision.U8_PERCEPTUAL)
"""The image precisions read and written at 8 bits; every other (16 or 32-bit integer, half, float, double, linear
or not) is read and written at 16 bits."""


def image_bits(image: Gimp.Image) -> int:
    """8 for an image of 8-bit precision (:data:`EIGHT_BIT_PRECISIONS`), 16 for a deeper one."""
    return 8 if image.get_precision() in EIGHT_BIT_PRECISIONS else 16


def little_endian(samples: bytes) -> bytes:
    """16-bit samples in the machine's byte order (babl's ``u16``) as little-endian ones (the protocol's), and back:
    ``samples`` itself on a little-endian machine, byte-swapped words (``array.array.byteswap``) on a big-endian
    one."""
    if sys.byteorder == "little":
        return samples
    words = array.array("H", samples)
    words.byteswap()
    return words.tobytes()


def eight_bit_rgba(samples: bytes | memoryview, bits: int) -> bytes:
    """R'G'B'A pixels of ``bits``-bit samples (16: little-endian) as R'G'B'A u8 bytes, to show on screen: the high
    byte of each 16-bit sample (``v // 256``, which is ``u`` for an 8-bit level ``257 × u``); 8-bit samples as
    they are."""
    return bytes(samples) if bits == 8 else bytes(samples[1::2])

MASK_FORMAT = "Y u8"
"""Babl format of the selection and of layer masks (8-bit linear coverage)."""


def source_layer(drawables: Sequence[Gimp.Drawable], procedure: str = "Generative Fill") -> Gimp.Layer:
    """The layer to fill from the procedure's ``drawables``: the one selected layer (a selected layer mask
    stands for its layer). ``procedure`` is the name the messages give (``"Generative Expand"``).

    Raises:
        FillError: not exactly one drawable, or a channel.
    """
    if len(drawables) != 1:
        raise FillError(f"Select exactly one layer for {procedure} ({len(drawables)} are selected).")
    drawable = drawables[0]
    if isinstance(drawable, Gimp.LayerMask):
        return Gimp.Layer.from_mask(drawable)
    if not isinstance(drawable, Gimp.Layer):
        raise FillError(f"{procedure} works on a layer: select a layer, not a channel.")
    return drawable


def read_request(layer: Gimp.Layer) -> RequestMetadata | None:
    """The request recorded with ``layer`` (its parasite :data:`client.metadata.PARASITE_NAME`), None when it has none.

    Raises:
        FillError: the parasite cannot be read (the message says why and names the layer).
    """
    parasite = layer.get_parasite(PARASITE_NAME)
    if parasite is None:
        return None
    try:
        return RequestMetadata.from_json(bytes(parasite.get_data()))
    except MetadataError as exc:
        raise FillError(f"The layer “{layer.get_name()}” holds a request that cannot be used: {exc.message}.") \
            from None


@dataclass(frozen=True)
class ResultOrigin:
    """A selected result layer and where it came from (:func:`result_origin`).

    Attributes:
        result: the result layer; the new layers go directly above it.
        request: its recorded request.
        source: the layer its fill read from: the first layer below it, among its siblings, that is not of its
            lineage (results are added directly above their source).
        lineage: its siblings (itself included) whose request has its :attr:`client.metadata.RequestMetadata.origin`.
        seeds: the seeds of :attr:`lineage`'s requests.
    """

    result: Gimp.Layer
    request: RequestMetadata
    source: Gimp.Layer
    lineage: tuple[Gimp.Layer, ...]
    seeds: frozenset[int]


def result_origin(image: Gimp.Image, drawables: Sequence[Gimp.Drawable], procedure: str) -> ResultOrigin:
    """The :class:`ResultOrigin` of the one selected layer (:func:`source_layer`) for ``procedure``'s messages.

    Raises:
        FillError: not one layer selected, a layer without a request (not a result of Generative Fill), a request
            that cannot be read, or no layer below the lineage to read from.
    """
    result = source_layer(drawables, procedure)
    request = read_request(result)
    if request is None:
        raise FillError(f"{procedure} works on a result of Generative Fill: the layer “{result.get_name()}” holds "
                        f"no request (its parasite “{PARASITE_NAME}”). Select a layer that Generative Fill added.")
    parent = result.get_parent()
    siblings = list(parent.get_children() if parent is not None else image.get_layers())
    lineage, seeds = [], set()
    for layer in siblings:
        try:
            recorded = read_request(layer)
        except FillError:  # another layer's unreadable request: not of this lineage
            continue
        if recorded is not None and recorded.origin == request.origin:
            lineage.append(layer)
            seeds.add(recorded.seed)
    position, ids = image.get_item_position(result), {layer.get_id() for layer in lineage}
    source = next((layer for layer in siblings[position + 1:] if layer.get_id() not in ids), None)
    if source is None:
        raise FillError(f"{procedure} cannot find the layer “{result.get_name()}” was made from: no layer below "
                        f"it but other results of the same fill.")
    return ResultOrigin(result, request, source, tuple(lineage), frozenset(seeds))


def _tree_path(image: Gimp.Image, item: Gimp.Item) -> list[int]:
    """``item``'s place in ``image``'s layer tree: its position in each group from the top level down."""
    path = []
    while item is not None:
        path.append(image.get_item_position(item))
        item = item.get_parent()
    return path[::-1]


def _layer_at(image: Gimp.Image, path: Sequence[int]) -> Gimp.Layer:
    """The layer at ``path`` (:func:`_tree_path`) in ``image``'s layer tree."""
    layers = image.get_layers()
    for position in path[:-1]:
        layers = layers[position].get_children()
    return layers[path[-1]]


def _read_rgba(drawable: Gimp.Drawable, rect: Rect, bits: int) -> bytes:
    """``drawable``'s R'G'B'A pixels of ``bits``-bit samples (:data:`RGBA_FORMATS`; 16-bit ones little-endian) in
    ``rect`` (coordinates of its image); outside the drawable: transparent."""
    _, offset_x, offset_y = drawable.get_offsets()
    area = Gegl.Rectangle.new(rect.x - offset_x, rect.y - offset_y, rect.width, rect.height)
    pixels = bytes(drawable.get_buffer().get(area, 1.0, RGBA_FORMATS[bits], Gegl.AbyssPolicy.NONE))
    return pixels if bits == 8 else little_endian(pixels)


class GimpDocument(Document):
    """A GIMP image, its selection, and the layer the fill reads from and inserts results above.

    Args:
        image: the image the procedure runs on.
        source: the layer to read (see :func:`source_layer`).
    """

    def __init__(self, image: Gimp.Image, source: Gimp.Layer) -> None:
        self._image = image
        self._source = source
        self._above = source
        self._hidden: tuple[Gimp.Layer, ...] = ()
        self._progress_text: str | None = None

    def regenerate(self, origin: ResultOrigin) -> None:
        """Make this the document of a regeneration of ``origin.result`` (*More Like This*, *Edit and
        Regenerate…*), whose source must be ``origin.source``: the visible picture is read without the layers of
        ``origin.lineage`` (hidden in the throw-away copy), as the lineage's first fill saw it, and the new layers
        go directly above ``origin.result``, which stays the selected layer."""
        self._above = origin.result
        self._hidden = origin.lineage

    def size(self) -> tuple[int, int]:
        """The image's ``(width, height)``."""
        return self._image.get_width(), self._image.get_height()

    @property
    def bits(self) -> int:
        """The image's depth as the fill reads and writes it (:func:`image_bits`): 8 or 16."""
        return image_bits(self._image)

    def selection_bounds(self) -> Rect | None:
        """``Gimp.Selection.bounds`` as a :class:`protocol.Rect` (x2, y2 exclusive), None when empty."""
        ok, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(self._image)
        if not ok or not non_empty:
            return None
        return Rect(x1, y1, x2 - x1, y2 - y1)

    def read_rgba(self, rect: Rect) -> bytes:
        """The source layer's R'G'B'A pixels (u8, or u16 little-endian at :attr:`bits` 16) in ``rect`` (image
        coordinates); outside the layer: transparent."""
        return _read_rgba(self._source, rect, self.bits)

    def read_visible(self, rect: Rect) -> bytes:
        """The visible composite in ``rect`` as R'G'B'A at :attr:`bits` ("Sample merged"), read from a throw-away
        copy (of the image's precision).

        ``Gimp.Image.duplicate``, cropped to ``rect``, its visible layers merged (``CLIP_TO_IMAGE``), read, then
        deleted: the user's image, its undo history, selection and clipboard are not touched (about 0.1 s for a
        512² crop of an 8192² image). Where no layer shows anything, and when no layer is visible: transparent.
        """
        bits = self.bits
        hidden = [_tree_path(self._image, layer) for layer in self._hidden]
        duplicate = self._image.duplicate()
        try:
            for path in hidden:
                _layer_at(duplicate, path).set_visible(False)
            duplicate.crop(rect.width, rect.height, rect.x, rect.y)
            merged = duplicate.merge_visible_layers(Gimp.MergeType.CLIP_TO_IMAGE)
            if merged is None:
                return bytes(rect.width * rect.height * 4 * bits // 8)
            return _read_rgba(merged, Rect(0, 0, rect.width, rect.height), bits)
        finally:
            duplicate.delete()

    def read_mask(self, rect: Rect) -> bytes:
        """The selection's coverage in ``rect`` as Y u8 (the selection channel is image-sized, no offset)."""
        area = Gegl.Rectangle.new(rect.x, rect.y, rect.width, rect.height)
        buffer = self._image.get_selection().get_buffer()
        return bytes(buffer.get(area, 1.0, MASK_FORMAT, Gegl.AbyssPolicy.NONE))

    def add_result_layers(self, layers: Sequence[ResultLayer], canvas: CanvasExpansion | None = None) -> list[str]:
        """Insert one layer per result directly above the source (the first result on top), each with its
        blend mask as layer mask and its request as the parasite :data:`client.metadata.PARASITE_NAME`, in one undo
        group; the source layer stays the selected layer, so *Filters ▸ Repeat* fills from the original again (for a
        regeneration, :meth:`regenerate`: above the result layer it started from, which stays selected). Each layer
        is made at the image's precision and its pixels written in the result's format (:data:`RGBA_FORMATS` of
        :attr:`ResultLayer.bits`).

        With ``canvas`` (Generative Expand), the group first grows the canvas: ``Gimp.Image.resize`` to its size
        with the old picture at ``canvas.picture``'s offset, which moves every layer, channel and the selection by
        that offset and resizes none of them (GIMP's *Image ▸ Canvas Size* with *Resize layers: None*), so every
        layer keeps its pixels and the new area is transparent until the result layer covers it. One Undo restores
        the canvas size and removes the layers.
        """
        image = self._image
        gray = image.get_base_type() == Gimp.ImageBaseType.GRAY
        layer_type = Gimp.ImageType.GRAYA_IMAGE if gray else Gimp.ImageType.RGBA_IMAGE
        names = []
        image.undo_group_start()
        try:
            if canvas is not None and not image.resize(canvas.width, canvas.height, canvas.picture.x,
                                                       canvas.picture.y):
                raise FillError(f"GIMP could not grow the canvas to {canvas.width}×{canvas.height} pixels.")
            for result in layers:  # each insertion lands directly above the source, below the ones before it
                area = Gegl.Rectangle.new(0, 0, result.width, result.height)
                layer = Gimp.Layer.new(image, result.name, result.width, result.height, layer_type, 100.0,
                                       Gimp.LayerMode.NORMAL)
                image.insert_layer(layer, self._above.get_parent(), image.get_item_position(self._above))
                layer.set_offsets(result.x, result.y)
                buffer = layer.get_buffer()
                pixels = result.rgba if result.bits == 8 else little_endian(result.rgba)
                buffer.set(area, RGBA_FORMATS[result.bits], pixels)
                buffer.flush()
                mask = layer.create_mask(Gimp.AddMaskType.WHITE)
                layer.add_mask(mask)
                mask_buffer = mask.get_buffer()
                mask_buffer.set(area, MASK_FORMAT, result.mask)
                mask_buffer.flush()
                mask.update(0, 0, result.width, result.height)
                layer.update(0, 0, result.width, result.height)
                if result.metadata is not None:
                    layer.attach_parasite(Gimp.Parasite.new(PARASITE_NAME, Gimp.PARASITE_PERSISTENT,
                                                            result.metadata.to_json().encode("utf-8")))
                names.append(layer.get_name())
            image.set_selected_layers([self._above])
        finally:
            image.undo_group_end()
        Gimp.displays_flush()
        return names

    def progress(self, fraction: float, text: str) -> None:
        """GIMP's progress bar: ``Gimp.progress_init`` on the first call, then ``set_text`` and ``update``."""
        if self._progress_text is None:
            Gimp.progress_init(text)
        elif text != self._progress_text:
            Gimp.progress_set_text(text)
        self._progress_text = text
        Gimp.progress_update(min(max(fraction, 0.0), 1.0))

    def message(self, text: str) -> None:
        """``Gimp.message`` (the message console or a dialog, as the user configured GIMP)."""
        Gimp.message(text)
