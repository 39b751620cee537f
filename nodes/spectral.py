"""Nodes for SINGER's spectral side: the Haar sub-band view (MSM/SFM nodes come with the diffusion issue)."""

from __future__ import annotations

import logging

import numpy as np
from comfy_api.latest import io

from ..singer_core.ops import wavelet
from ..singer_core.ops.wavelet import MODES
from ..singer_core.spectral import visualize
from ..singer_core.spectral.visualize import (
    COLORMAPS,
    NORMALIZATIONS,
    SubbandViewConfig,
    audio_subband_image,
    feature_subband_image,
)
from .comfy_bridge import AudioFeatures, image_from_uint8
from .web_preview import SUBBAND_KEY, preview_directory, write_png_preview

logger = logging.getLogger(__name__)


def subband_cells(image_shape: tuple[int, ...], config: SubbandViewConfig) -> list[dict]:
    """Where each band sits in a ``subband_grid`` image: ``[{level, band, name, x, y, w, h}]`` in pixels
    (the cell without its caption), level 1 first, bands in ``config.order``.

    Args:
        image_shape: (H, W, 3) of the grid image.
        config: the config the grid was drawn with.

    Raises:
        ValueError: the image does not have the layout visualize.subband_grid draws for this config.
    """
    gap = visualize._GAP  # the grid's private layout constants: checked against the image size below
    label = visualize._LABEL_HEIGHT if config.labels else 0
    rows, cols = int(image_shape[0]), int(image_shape[1])
    cell_h = config.cell_height
    cell_w = (cols - gap) // 4 - gap
    if rows != config.levels * (label + cell_h + gap) + gap or cols != 4 * (cell_w + gap) + gap or cell_w < 1:
        raise ValueError(f"subband_cells: a {cols}x{rows} image is not a {config.levels}-level sub-band grid "
                         f"with {cell_h}-pixel cells")
    names, pywt_names = wavelet.BAND_NAMES[config.order], wavelet.PYWT_NAMES[config.order]
    cells = []
    for level in range(config.levels):
        top = gap + level * (label + cell_h + gap) + label
        for band in range(4):
            cells.append({"level": level + 1, "band": names[band], "name": pywt_names[band],
                          "x": gap + band * (cell_w + gap), "y": top, "w": cell_w, "h": cell_h})
    return cells


def subband_preview_ui(images: list[np.ndarray], config: SubbandViewConfig) -> dict:
    """``{"singer_subbands": [...]}``: each grid image as a temp PNG with its cell boxes, for the
    sub-band viewer (web/js/subband_viewer.js); ``{}`` when writing fails (the node still succeeds)."""
    try:
        directory = preview_directory()
        return {SUBBAND_KEY: [
            write_png_preview(image, directory, prefix="singer_subbands", item=index,
                              cells=subband_cells(image.shape, config), levels=config.levels,
                              order=config.order)
            for index, image in enumerate(images)]}
    except (OSError, ValueError) as error:
        logger.warning("SingerWaveletSubbands: sub-band preview not written: %s", error)
        return {}


class SingerWaveletSubbands(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerWaveletSubbands",
            display_name="Wavelet Sub-bands (SINGER)",
            category="SINGER/spectral",
            description=(
                "Haar wavelet sub-bands (LL/LH/HL/HH at every level, SINGER §3.1) of either the log-mel "
                "spectrogram of an AUDIO, or the d_a x l plane (feature width x frames) of SINGER audio "
                "features: the view the Multi-scale Spectral Module weights."
            ),
            inputs=[
                io.MultiType.Input(
                    io.Audio.Input("audio", tooltip="An AUDIO (channels mixed to mono) or SINGER audio features."),
                    types=[io.Audio, AudioFeatures],
                    tooltip="An AUDIO (log-mel plane; channels mixed to mono) or SINGER_AUDIO_FEATURES "
                            "(feature width x frames plane of one row, see 'feature_row').",
                ),
                io.Int.Input("levels", default=3, min=1, max=6,
                             tooltip="Decomposition levels, one grid row each. Each level needs twice as many "
                                     "mel bins and frames as the next."),
                io.Int.Input("n_mels", default=80, min=16, max=256, step=8,
                             tooltip="Mel bins of the spectrogram (rows of the plane that is transformed)."),
                io.Combo.Input("normalize", options=list(NORMALIZATIONS), default="band",
                               tooltip="'band': every cell uses its own colour range; 'shared': all detail "
                                       "bands share one range, so their energies can be compared."),
                io.Combo.Input("colormap", options=list(COLORMAPS), default="viridis",
                               tooltip="Colour map for the coefficients."),
                io.Combo.Input("band_order", options=["pywt", "singer"], default="pywt",
                               tooltip="'pywt': LL, LH(cH), HL(cV), HH; 'singer': the official SINGER code's "
                                       "order, with the two single-high bands swapped."),
                io.Combo.Input("mode", options=list(MODES), default="symmetric",
                               tooltip="How an odd-sized axis is extended by one sample (PyWavelets names)."),
                io.Int.Input("cell_height", default=96, min=32, max=512, step=8,
                             tooltip="Height in pixels of each band cell."),
                io.Int.Input("feature_row", default=-1, min=-64, max=63, optional=True,
                             tooltip="Features only: which row per frame to show (a wav2vec2 layer, or a "
                                     "sub-frame step); -1 = the last layer."),
            ],
            outputs=[io.Image.Output("image", display_name="image", tooltip="The labelled sub-band grid, one image per audio batch item.")],
        )

    @classmethod
    def execute(cls, audio, levels, n_mels, normalize, colormap, band_order, mode, cell_height,
                feature_row=-1) -> io.NodeOutput:
        # lazy: the decoders are heavy to import
        from ..singer_core.audio.io import audio_from_comfy

        config = SubbandViewConfig(levels=levels, normalize=normalize, colormap=colormap,
                                   order=band_order, mode=mode, cell_height=cell_height)
        try:
            if isinstance(audio, dict):
                waveform, sample_rate = audio_from_comfy(audio, "SingerWaveletSubbands")
                images = [audio_subband_image(item, sample_rate, config, n_mels=n_mels) for item in waveform]
            else:
                images = [feature_subband_image(audio.features, config, row=feature_row, fps=audio.fps)]
        except ValueError as error:
            raise ValueError(f"SingerWaveletSubbands: {error}") from error
        batch = image_from_uint8(np.stack(images))
        return io.NodeOutput(batch, ui=subband_preview_ui(images, config))
