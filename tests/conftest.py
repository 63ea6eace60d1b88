"""Shared fixtures. The tiny offline diffusers pipeline is built once per test session."""

from tiny_pipelines import tiny_inpaint_model  # noqa: F401 - session fixture: tiny offline SD inpainting pipeline folder
