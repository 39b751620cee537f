"""The progress callback every long-running core function accepts (STYLE rule 11).

A core function that loops (sampling steps, clips, frames, songs, files) takes ``progress: Progress |
None = None`` and calls ``progress(done, total)`` after each unit of work: ``done`` counts the units
finished so far (1..total), ``total`` the units of the whole call. The callback may raise to stop the
work (the ComfyUI nodes wire it to ``comfy.utils.ProgressBar`` and the interruption check, see
``nodes/comfy_bridge.py``; the CLIs to tqdm). The trainer's per-step callback also carries the step's
scalars, ``report(step, total_steps, scalars)``, and has its own name, ``StepReport``, next to the loop
that calls it (``singer_core.train.loop``).

This module is a leaf: it imports nothing of the package, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Callable

# progress(done, total): `done` of `total` units finished; may raise to stop the work
Progress = Callable[[int, int], None]

