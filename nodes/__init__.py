"""The one registry of the pack's ComfyUI nodes (V3 schema). Imported only inside ComfyUI."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .spectral import SingerWaveletSubbands

NODES: list[type[io.ComfyNode]] = [
    SingerWaveletSubbands,
]


class SingerExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> SingerExtension:
    return SingerExtension()
