"""Clients of the gimp-inpaint daemon.

:mod:`client.connection` is the WebSocket client (vendored into the GIMP plug-in, so this package
file imports nothing); :mod:`client.imaging` and :mod:`client.cli` are the command-line client,
which uses NumPy and Pillow.
"""
