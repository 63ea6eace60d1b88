"""The GIMP 3 plug-in: pure orchestration (:mod:`plugin_gimp.fill`) behind an editor interface
(:mod:`plugin_gimp.document`), its GIMP adapter (:mod:`plugin_gimp.gimp_document`) and the plug-in
entry file ``plugin_gimp/gimp-inpaint/gimp-inpaint.py``. All of it is vendored into GIMP's plug-ins
folder by :mod:`installer`, so this file imports nothing.
"""
