"""`make demo`: the main job on the embedded default (``python -m singer_core.demo``; cli.py runs it), and the
demo's small models: the tiny SINGER stack (singer_stack.py) and the SynthSinger NeRF (nerf_subject.py), which
the ComfyUI workflow and the tests build too."""

from .cli import main

__all__ = ["main"]
