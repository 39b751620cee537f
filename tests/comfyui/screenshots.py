"""Screenshots of the browser tests: written next to the test (tmp_path) and, when SINGER_ARTIFACTS names a folder,
copied there for people to look at. Imported as ``tests.comfyui.screenshots``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def save_screenshot(page, folder: Path, name: str) -> Path:
    """page.screenshot into folder/<name>.png, copied to $SINGER_ARTIFACTS if set; returns the written file."""
    shot = Path(folder) / f"{name}.png"
    page.screenshot(path=str(shot))
    artifacts = os.environ.get("SINGER_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)
    return shot
