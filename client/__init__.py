"""Clients of the gimp-inpaint daemon.

:mod:`client.connection` is the WebSocket client, :mod:`client.document` the editor interface and
:mod:`client.fill` the editor-independent fill workflow over it; these three are vendored into the GIMP plug-in
(standard library, :mod:`protocol`, msgpack and websockets only), so this package file imports nothing.
:mod:`client.imaging` and :mod:`client.cli` are the command-line client, which uses NumPy and Pillow.
"""
