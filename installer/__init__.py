"""Installs the GIMP 3 plug-in: ``python -m gimp_inpaint.installer install`` / ``uninstall`` (console script
``gimp-inpaint-install``).

:mod:`installer.locations` finds GIMP's folders, :mod:`installer.shortcuts` edits ``shortcutsrc``,
:mod:`installer.bundle` copies the plug-in with its vendored pure-Python packages and writes
``connection.json``; :mod:`installer.__main__` is the command line.
"""
