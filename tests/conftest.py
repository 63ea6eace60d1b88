"""Shared fixtures. The tiny offline diffusers models of tests/tiny_pipelines.py are built lazily, once per session."""

from tiny_flow_pipelines import (  # noqa: F401 - session fixtures, see tests/tiny_flow_pipelines.py
    tiny_chroma_model,
    tiny_flux_dev_model,
    tiny_flux_fill_model,
    tiny_flux_kontext_model,
    tiny_flux_lora,
    tiny_sd3_model,
)
from tiny_pipelines import (  # noqa: F401 - session fixtures, see tests/tiny_pipelines.py
    tiny_controlnet_model,
    tiny_inpaint_model,
    tiny_kandinsky22_inpaint_model,
    tiny_sd_embedding,
    tiny_sd_lora,
    tiny_sd_model,
    tiny_sd_single_file,
    tiny_sdxl_inpaint_model,
    tiny_sdxl_lora,
    tiny_sdxl_refiner_model,
)
from tiny_qwen_pipelines import (  # noqa: F401 - session fixtures, see tests/tiny_qwen_pipelines.py
    tiny_flux2_klein_model,
    tiny_qwen_image_model,
    tiny_z_image_model,
)
