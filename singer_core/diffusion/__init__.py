"""SINGER / Hallo denoising stack: reference UNet, inflated denoising UNet (reference attention, audio
modules, AnimateDiff motion modules, SFM), face locator, image/audio projections, MSM; net.pth loaders.

Submodules import diffusers lazily; importing this package does no work beyond defining names.
"""

from .audio_modules import RegionMasks
from .audio_proj import AudioProjModel
from .config import DiffusionConfig
from .face_embedding import FaceEmbedder
from .face_locator import FaceLocator
from .image_proj import ImageProjModel
from .loading import (
           load_motion_module,
           load_net_pth,
           load_sd15_state,
           load_sd15_unet,
           read_state_dict,
)
from .net import SingerNet
from .pipeline import PipelineOptions, PipelineResult, SingerPipeline
from .reference import ReferenceAttentionControl, build_reference_unet
from .sampling import sample_clip, sample_long
from .unet3d import DenoisingUNet3D
from .vae import load_vae, tiny_vae

__all__ = ["AudioProjModel", "DenoisingUNet3D", "DiffusionConfig", "FaceEmbedder", "FaceLocator", "ImageProjModel",
           "ReferenceAttentionControl", "RegionMasks", "SingerNet", "build_reference_unet", "load_motion_module",
           "load_net_pth", "load_sd15_state", "load_sd15_unet", "read_state_dict", "sample_clip",
           "sample_long", "PipelineOptions", "PipelineResult", "SingerPipeline", "load_vae",
           "tiny_vae"]
