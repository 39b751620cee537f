"""Portrait files read as (H, W, 3) uint8 RGB whatever their mode: CMYK, palette, gray + alpha, 16-bit, animated.

Pillow opens the file; the EXIF orientation is applied (a phone photo stored sideways is turned upright, so the
face detector finds an upright face); an animated GIF / WebP / APNG gives its first frame; CMYK (JPEGs from print
workflows) is converted through Pillow's colour conversion (never by dropping a channel, which inverts it);
palette images are looked up in their palette; 16- and 32-bit grayscale is scaled by its full range (65535),
not clipped; transparency is composited over a background colour.

`describe_array_mode` says what a (H, W[, C]) array probably is, for error messages of code that takes arrays.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

WHITE = (255, 255, 255)


def load_image(path: str | os.PathLike, *, background: tuple[int, int, int] = WHITE) -> np.ndarray:
    """Read an image file -> (H, W, 3) uint8 RGB, upright, first frame, transparency over `background`.

    Raises:
        FileNotFoundError: no file at `path`. ValueError: not an image Pillow can read (named, with the fix).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"load_image: '{path}' is a folder; give an image file (.png, .jpg, ...)")
    if not path.is_file():
        raise FileNotFoundError(f"load_image: no file at '{path}'; check the path")
    try:
        with Image.open(path) as opened:
            frames = getattr(opened, "n_frames", 1)
            if frames > 1:
                logger.info("load_image: '%s' has %d frames; using the first", path.name, frames)
                opened.seek(0)
            image = ImageOps.exif_transpose(opened)  # a copy, turned upright (no-op without EXIF orientation)
            if image is None:  # Pillow < 9.4 returned None for in-place use only; be safe
                image = opened.copy()
            image.load()
    except UnidentifiedImageError as error:
        raise ValueError(f"load_image: '{path}' is not an image Pillow can read ({error}); give a PNG or JPEG "
                         "portrait (re-export the file)") from error
    except (OSError, SyntaxError) as error:  # truncated / damaged data
        raise ValueError(f"load_image: '{path}' is damaged or cut short ({error}); re-export or re-download "
                         "it") from error
    return image_to_rgb(image, background=background)


def image_to_rgb(image, *, background: tuple[int, int, int] = WHITE) -> np.ndarray:
    """A PIL image of any mode -> (H, W, 3) uint8 RGB (see the module docstring for each mode)."""
    from PIL import Image

    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit gray: scale by the full range, not clip
        array = np.asarray(image, dtype=np.float64)
        if mode == "F":  # float gray in 0..1
            full = 1.0
        else:
            full = 65535.0 if mode.startswith("I;16") or array.max(initial=0) <= 65535 else float(array.max())
        gray = np.clip(np.rint(array / full * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "P":  # palette indices -> colours (with the palette's transparency, if any)
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "1", "L"):
        image = image.convert("RGB")
    elif mode in ("LA", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        canvas = Image.new("RGB", image.size, background)
        canvas.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        image = canvas
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def describe_array_mode(array: np.ndarray) -> str:
    """What an image array probably is and how to turn it into (H, W, 3) uint8 RGB, for error messages."""
    shape, dtype = array.shape, array.dtype
    if dtype == np.uint16 or (dtype.kind in "iu" and dtype.itemsize >= 2 and array.size and array.max() > 255):
        return (f"a 16-bit image ({dtype}, shape {shape}, values up to {int(array.max()) if array.size else 0}); "
                "scale it by its full range: (image / 65535 * 255).round().astype(np.uint8) (or load the file "
                "with singer_core.io.image.load_image)")
    if array.ndim == 2 or (array.ndim == 3 and shape[2] == 1):
        return (f"one channel (shape {shape}): grayscale, or the indices of a palette image (PNG/GIF mode 'P', "
                "whose colours live in the file's palette); load the file with singer_core.io.image.load_image "
                "(it converts palette, CMYK and 16-bit images), or for true grayscale use "
                "np.repeat(image.reshape(H, W, 1), 3, axis=2)")
    if array.ndim == 3 and shape[2] == 2:
        return (f"gray + alpha (LA, shape {shape}); load the file with singer_core.io.image.load_image, or use "
                "np.repeat(image[..., :1], 3, axis=2)")
    if array.ndim == 3 and shape[2] == 4:
        return (f"four channels (shape {shape}): RGBA, or CMYK (a print JPEG), which image[..., :3] would turn "
                "into inverted colours; load the file with singer_core.io.image.load_image (Pillow converts "
                "CMYK and composites alpha); only for true RGBA drop the alpha with image[..., :3]")
    return f"shape {shape}, dtype {dtype}"
