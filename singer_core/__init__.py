"""SINGER core library: song + portrait -> singing video (SINGER, FD2Talk, DAMC).

Never imports ComfyUI. Subpackages are imported explicitly (``from singer_core.ops import
wavelet``); importing this package does no work.
"""

__version__ = "0.1.0"
