"""Images in the pack's layouts and the one converter between each pair of them; portrait files read as (H, W, 3)
uint8 RGB whatever their mode: CMYK, palette, gray + alpha, 16-bit, animated.

The layouts (channels-last unless named "model"):

=================  ==============================  ==========================================================
name               shape, dtype, range             who uses it
=================  ==============================  ==========================================================
unit               (..., H, W, 3) float32 0..1     ComfyUI IMAGE batches, our frames and portraits (torch)
uint8              (..., H, W, 3) uint8 0..255     OpenCV (crop, detectors), video files, PNG (numpy)
model              (N, 3, H, W) float -1..1        VAE / UNet pixels (Hallo, SD1.5: ``x * 2 - 1``)
=================  ==============================  ==========================================================

`rgb_channels` makes (..., C) images with 1-4 channels RGB; `portrait_from_batch` takes the portrait out of a
ComfyUI IMAGE batch (the nodes call it through ``nodes/comfy_bridge.py``); `to_uint8` / `to_unit` convert
between unit and uint8; `unit_array` gives the unit numpy view OpenCV code needs (no copy for a CPU float32
tensor already in 0..1); `to_model` / `from_model` convert unit <-> model pixels.

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
import torch

logger = logging.getLogger(__name__)

WHITE = (255, 255, 255)


# ---- converters between the layouts -----------------------------------------------------------------------
def rgb_channels(images: torch.Tensor, who: str) -> torch.Tensor:
    """(..., H, W, C) -> (..., H, W, 3): gray (C = 1) repeated, gray + alpha (2) gray repeated, RGBA (4) alpha
    dropped, RGB (3) unchanged (a view, no copy).

    Raises:
        ValueError: another channel count (named, with the accepted ones).
    """
    channels = images.shape[-1]
    if channels == 3:
        return images
    if channels in (1, 2):
        return images[..., :1].expand(*images.shape[:-1], 3)
    if channels == 4:
        return images[..., :3]
    raise ValueError(f"{who}: image has {channels} channels; give an RGB (3), RGBA (4) or grayscale (1) image")


def portrait_from_batch(images: torch.Tensor, who: str, *, min_side: int = 1) -> torch.Tensor:
    """The portrait of a ComfyUI IMAGE batch: (B, H, W, C) or (H, W, C) float 0..1 -> (H, W, 3) float32 0..1.

    The first item (a warning names the batch size when it has more); channels by `rgb_channels`; values
    clamped to 0..1; contiguous. This is the only conversion between a node's IMAGE input and the pipelines
    (the SINGER pipeline turns it into VAE pixels with `unit_array` + crop + `to_model`, no other copy).

    Raises:
        ValueError: not a tensor of 3 or 4 dims, a bad channel count, or a side below `min_side` pixels.
    """
    if not isinstance(images, torch.Tensor) or images.ndim not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{who}: image must be an IMAGE batch (B, H, W, C), got {shape}")
    images = images if images.ndim == 4 else images[None]
    if images.shape[0] > 1:
        logger.warning("%s: the IMAGE batch has %d images; using the first as the portrait", who, images.shape[0])
    portrait = rgb_channels(images[0].float(), who)
    height, width = portrait.shape[:2]
    if min(height, width) < min_side:
        raise ValueError(f"{who}: the portrait is {width}x{height} px; give at least {min_side} px on each side "
                         "(a face crop is resized to the model's size, 512 px for SINGER)")
    return portrait.clamp(0, 1).contiguous()


def to_uint8(images) -> np.ndarray:
    """unit -> uint8: float 0..1 (torch on any device, or numpy; any shape) -> C-contiguous numpy uint8
    round(x * 255), values outside 0..1 clipped (round half to even, as np.rint / torch.round). uint8 input is
    returned as is."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu()
        images = images.numpy() if images.dtype == torch.uint8 else images.float().numpy()
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.ascontiguousarray(np.clip(np.rint(images.astype(np.float32, copy=False) * 255.0), 0, 255), np.uint8)


def to_unit(images) -> torch.Tensor:
    """uint8 -> unit: (..., H, W, C) uint8 numpy or torch -> torch float32 x / 255 (same device for torch)."""
    images = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if images.dtype != torch.uint8:
        raise ValueError(f"to_unit: expected uint8 images (0..255), got {images.dtype}")
    return images.float() / 255.0


def unit_array(image, who: str) -> np.ndarray:
    """One RGB image as the (H, W, 3) float32 0..1 numpy array OpenCV code takes.

    image: (H, W, 3|4) or (1, H, W, 3|4) float 0..1 or uint8, numpy or torch. A CPU float32 tensor already in
    0..1 (what `portrait_from_batch` returns) is viewed, not copied; uint8 is divided by 255; floats outside
    0..1 are clipped.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = image[0] if image.dim() == 4 and image.shape[0] == 1 else image
        image = image.numpy()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"{who}: image must be (H, W, 3) RGB, got shape {image.shape}; take one image of a batch "
                         "(image[0])")
    image = image[..., :3]
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"{who}: image must be uint8 or float (0..1), got {image.dtype}")
    image = np.ascontiguousarray(image, dtype=np.float32)  # no copy for a contiguous float32 image
    if image.size and (image.min() < 0.0 or image.max() > 1.0):
        image = np.clip(image, 0.0, 1.0)
    return image


def to_model(images) -> torch.Tensor:
    """unit -> model: (N, H, W, 3) or (H, W, 3) float 0..1 (numpy or torch) -> (N, 3, H, W) x * 2 - 1 (Hallo's
    ``transforms.Normalize([0.5], [0.5])``), float32 for numpy input, the tensor's dtype and device otherwise."""
    images = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
    images = images[None] if images.dim() == 3 else images
    if images.dim() != 4:
        raise ValueError(f"to_model: images must be (N, H, W, 3) or (H, W, 3), got {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2) * 2.0 - 1.0


def from_model(images: torch.Tensor) -> torch.Tensor:
    """model -> unit: (N, 3, H, W) in -1..1 (any dtype / device) -> (N, H, W, 3) float32 on the CPU,
    x / 2 + 0.5 clamped to 0..1 (Hallo's ``(video / 2 + 0.5).clamp(0, 1)``)."""
    if images.dim() != 4:
        raise ValueError(f"from_model: images must be (N, 3, H, W), got {tuple(images.shape)}")
    return (images.float() / 2 + 0.5).clamp_(0, 1).permute(0, 2, 3, 1).cpu()


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
