"""The GIMP 3 plug-in: the GIMP adapter (:mod:`plugin_gimp.gimp_document`, a :class:`client.document.Document`)
and the plug-in entry file ``plugin_gimp/gimp-inpaint/gimp-inpaint.py``. The editor-independent fill workflow is
:mod:`client.fill`. All of it is vendored into GIMP's plug-ins folder by :mod:`installer`, so this file imports
nothing.
"""
