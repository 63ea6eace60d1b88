"""Installs the GIMP 3 plug-in and sets up the daemon's environment: ``python -m gimp_inpaint.installer
install`` / ``uninstall`` / ``env`` (console script ``gimp-inpaint-install``); ``install.sh`` (Linux, macOS) and
``install.ps1`` (Windows) do everything in one command.

:mod:`installer.locations` finds every GIMP 3.x configuration and installed GIMP, :mod:`installer.shortcuts`
edits ``shortcutsrc``, :mod:`installer.bundle` copies the plug-in with its vendored pure-Python packages and
writes ``connection.json``, :mod:`installer.torch_select` chooses the torch build for the machine,
:mod:`installer.autostart` registers the daemon to start at login; :mod:`installer.__main__` is the command line.
"""
