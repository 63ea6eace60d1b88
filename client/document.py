"""The editor as :func:`client.fill.run_fill` sees it: an abstract :class:`Document`.

Modelled on Krita AI Diffusion's ``Document``: the fill logic talks to this interface only, so it is
tested with a fake document and also drives the command-line client. :mod:`plugin_gimp.gimp_document`
implements it on GIMP 3. All coordinates are image pixels; pixel data is raw interleaved samples, row-major, as in
:class:`protocol.Plane`: ``u8`` bytes, or little-endian ``u16`` for a document whose :attr:`Document.bits` is 16.
Vendored into the plug-in: standard library and :mod:`protocol` only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from gimp_inpaint.protocol import DEFAULT_PREVIEW_SIZE, CanvasExpansion, Preview, Rect

from .metadata import RequestMetadata


@dataclass(frozen=True)
class ResultLayer:
    """One generated variant to add as a new layer with a layer mask.

    Attributes:
        name: the layer's name, e.g. ``"Generative fill: a red boat (seed 42)"``.
        x, y: the layer's offset in the image (pixels): the variant's box, inside the request's crop.
        width, height: the layer's size (pixels), the box's (the bounding box of the blend mask).
        rgba: ``width × height × 4`` samples of ``bits`` bits, R'G'B'A u8 or (``bits`` 16) R'G'B'A u16 little-endian
            (sRGB-encoded, straight alpha).
        mask: ``width × height`` bytes, the blend mask for the layer mask (255 = show the layer; always 8-bit).
        seed: the seed the variant was generated with.
        timings: seconds per stage as the daemon reported them (``"inference"``, ``"total"``, …).
        bits: 8 or 16, the depth of ``rgba`` (the variant's :attr:`protocol.Plane.bits`).
        metadata: the request that made it, this variant's seed included, for the editor to keep with the layer
            (:class:`client.metadata.RequestMetadata`; GIMP: a parasite); None when unknown.
    """

    name: str
    x: int
    y: int
    width: int
    height: int
    rgba: bytes
    mask: bytes
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    bits: int = 8
    metadata: RequestMetadata | None = None

    def __post_init__(self) -> None:
        if self.bits not in (8, 16) or len(self.rgba) != self.width * self.height * 4 * self.bits // 8 \
                or len(self.mask) != self.width * self.height:
            raise ValueError(f"layer {self.name!r}: {len(self.rgba)} RGBA bytes of {self.bits}-bit samples and "
                             f"{len(self.mask)} mask bytes do not fit {self.width}×{self.height}")


class Document(ABC):
    """An open image in an editor, with a selection and one source layer (the active drawable)."""

    @abstractmethod
    def size(self) -> tuple[int, int]:
        """The image's ``(width, height)`` in pixels."""

    @abstractmethod
    def selection_bounds(self) -> Rect | None:
        """Bounding box of the selection in image pixels, or None when nothing is selected."""

    @property
    def bits(self) -> int:
        """The depth (bits per sample) of the pixels :meth:`read_rgba` and :meth:`read_visible` return: 8 (the
        default) or 16, for an image whose precision is deeper than 8 bits (16 or 32-bit integer, half, float or
        double), so that the fill sends its crop at 16 bits and the result layers come back so
        (:attr:`ResultLayer.bits`), written at the image's precision."""
        return 8

    @abstractmethod
    def read_rgba(self, rect: Rect) -> bytes:
        """The source layer's pixels inside ``rect`` (image coordinates, inside the image).

        Returns:
            ``rect.width × rect.height × 4`` samples at :attr:`bits`: bytes of R'G'B'A u8, or R'G'B'A u16
            little-endian (8 bytes a pixel). The adapter accounts for the layer's offset; pixels of ``rect``
            outside the layer are transparent (all samples 0).
        """

    def read_visible(self, rect: Rect) -> bytes:
        """The picture as the user sees it inside ``rect``: the composite of the visible layers ("Sample merged").

        Returns:
            Bytes as :meth:`read_rgba`; transparent where no layer shows anything. The default is
            :meth:`read_rgba`, right for a document of one layer (the command line's picture).
        """
        return self.read_rgba(rect)

    @abstractmethod
    def read_mask(self, rect: Rect) -> bytes:
        """The selection's coverage inside ``rect``: ``rect.width × rect.height`` bytes (Y u8, 255 = selected)."""

    @abstractmethod
    def add_result_layers(self, layers: Sequence[ResultLayer], canvas: CanvasExpansion | None = None) -> list[str]:
        """Add every layer directly above the source layer (the first on top), as ONE undo step.

        Each layer is placed at ``(x, y)`` with its RGBA pixels (at its :attr:`ResultLayer.bits`, written at the
        image's precision) and its ``mask`` as layer mask, and keeps its :attr:`ResultLayer.metadata` where the
        editor can store it (GIMP: the parasite :data:`client.metadata.PARASITE_NAME`, in the same undo step).

        Args:
            layers: the layers, in image coordinates (of the grown canvas, with ``canvas``).
            canvas: Generative Expand's new canvas (:class:`protocol.CanvasExpansion`): first grow the canvas to its
                size with the old picture at ``canvas.picture`` (every layer keeps its size and pixels and moves
                with the picture; the new area is transparent), in the same undo step as the layers. None: the
                canvas stays.

        Returns:
            The names the layers got (an editor may make duplicate names unique).
        """

    @abstractmethod
    def progress(self, fraction: float, text: str) -> None:
        """Show progress: ``fraction`` in 0…1 and a short status ``text``."""

    @abstractmethod
    def message(self, text: str) -> None:
        """Tell the user something that is not an error (e.g. that the engine ignores the prompt)."""

    def cancel_requested(self) -> bool:
        """True once the user asked to stop the running fill (default: the editor cannot ask)."""
        return False

    @property
    def preview_every(self) -> int:
        """Steps between the live previews this document shows (:meth:`show_preview`), 1…
        :data:`protocol.MAX_PREVIEW_EVERY` (:data:`protocol.DEFAULT_PREVIEW_EVERY` is the usual rate); 0, the
        default, shows none, and the fill asks the daemon for none. Read once per fill, when its request is made."""
        return 0

    @property
    def preview_size(self) -> int:
        """The longest side (pixels) of the previews this document shows, :data:`protocol.MIN_PREVIEW_SIZE`…
        :data:`protocol.MAX_PREVIEW_SIZE` (default :data:`protocol.DEFAULT_PREVIEW_SIZE`); a smaller crop's are its
        own size. Read with :attr:`preview_every`."""
        return DEFAULT_PREVIEW_SIZE

    def show_preview(self, preview: Preview) -> None:  # noqa: B027 - a document that shows none needs nothing here
        """Show the job's picture as it forms (only called when :attr:`preview_every` ≥ 1): ``preview.image`` is the
        whole crop sent (the fill's context crop, not the selection), ``preview.image.width × height × 4`` bytes
        R'G'B'A u8 at the size :attr:`preview_size` gives, after inference step ``preview.step`` of
        ``preview.total`` (steps × variants, as :meth:`progress` counts them). Called on the thread that runs the
        fill, between the daemon's messages, like :meth:`progress`; it should return quickly (the daemon drops
        previews while the last one is unread, so a slow one only gets fewer). A sketch to look at: never paste it
        (the result layers come with :meth:`add_result_layers`)."""
