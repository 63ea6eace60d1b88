"""Client-supplied text made safe for log lines and error messages: :func:`quote`.

A client chooses job ids, LoRA names, field names, its own name and every other string in a frame. Put raw
into a message, a newline in one would forge log lines (``daemon.log`` is line-oriented) and a 60 MB string
would make a 60 MB line. Every message built from client input quotes that input through :func:`quote`.
"""

from __future__ import annotations

import reprlib

QUOTE_MAX_CHARS = 200
"""Most characters :func:`quote` keeps of a value's escaped form (it adds ``…`` when it cut some)."""


class _BoundedRepr(reprlib.Repr):
    """:mod:`reprlib` with bytes cut before they are escaped (reprlib would escape all of them first)."""

    def repr_bytes(self, x: bytes, level: int) -> str:
        return repr(x[:self.maxstring])

    def repr_bytearray(self, x: bytearray, level: int) -> str:
        return repr(x[:self.maxstring])


_REPR = _BoundedRepr()
_REPR.maxstring = _REPR.maxother = QUOTE_MAX_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxlevel = 3


def quote(value: object) -> str:
    """``value`` escaped like :func:`repr` and cut to :data:`QUOTE_MAX_CHARS` characters plus ``…``.

    Strings come out in quotes with every non-printable character escaped (a newline is the two characters
    ``\\n``; ``\\r``, ESC, U+0085 and U+2028 likewise), so the result is always one line. The work is bounded too:
    a string or bytes value is cut before it is escaped, and lists and maps are shown to 8 items and 3 levels
    (:mod:`reprlib`), so quoting a 100 MB value costs about as much as quoting a short one.
    """
    text = repr(value[:QUOTE_MAX_CHARS + 1]) if isinstance(value, str | bytes | bytearray) else _REPR.repr(value)
    return text if len(text) <= QUOTE_MAX_CHARS else text[:QUOTE_MAX_CHARS] + "…"
