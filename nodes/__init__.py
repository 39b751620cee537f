"""The one registry of the pack's ComfyUI nodes (V3 schema). Imported only inside ComfyUI."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .audio import (
    SingerAudioEncode,
    SingerAudioEncoderLoader,
    SingerIsolateVocals,
    SingerLoadAudio,
    SingerSynthSong,
)
from .comfy_bridge import register_model_folders
from .diffusion import SingerModelLoader, SingerSampleVideo
from .face import SingerFaceCrop, SingerFacePaste, SingerRenderMotion, SingerSynthSinger
from .fd2talk import SingerAnimatePortrait, SingerFrameModelLoader
from .metrics import SingerEvaluate, SingerFVD
from .motion import SingerMotionLoader, SingerSampleMotion
from .nerf import SingerNeRFLoader, SingerNeRFRender, SingerTextToSpeech
from .spectral import SingerWaveletSubbands
from .train import SingerTrain

NODES: list[type[io.ComfyNode]] = [
    SingerLoadAudio,
    SingerSynthSong,
    SingerIsolateVocals,
    SingerAudioEncoderLoader,
    SingerAudioEncode,
    SingerWaveletSubbands,
    SingerSynthSinger,
    SingerRenderMotion,
    SingerFaceCrop,
    SingerFacePaste,
    SingerMotionLoader,
    SingerSampleMotion,
    SingerFrameModelLoader,
    SingerAnimatePortrait,
    SingerEvaluate,
    SingerFVD,
    SingerTrain,
    SingerModelLoader,
    SingerSampleVideo,
    SingerNeRFLoader,
    SingerNeRFRender,
    SingerTextToSpeech,
]


class SingerExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> SingerExtension:
    register_model_folders()
    return SingerExtension()
