"""`make demo`: the main job on the embedded default.

Today: synthesise a SynthSinger song and render its Haar sub-band view (SINGER §3.1) to
``out/``. Later issues extend it to the full song + portrait -> singing video pipeline.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m singer_core.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--seconds", type=float, default=6.0, help="song length in seconds")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the song")
    parser.add_argument("--levels", type=int, default=3, help="wavelet levels in the sub-band view")
    args = parser.parse_args(argv)
    if not logger.handlers:  # configure our own logger only; never the root (basicConfig)
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    from PIL import Image

    from .audio.io import write_wav
    from .audio.synth import sing
    from .spectral.visualize import SubbandViewConfig, audio_subband_image

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    song = sing(args.seconds, seed=args.seed)
    wav_path = write_wav(out / "song.wav", song.waveform, song.sample_rate)
    image = audio_subband_image(song.waveform, song.sample_rate, SubbandViewConfig(levels=args.levels))
    png_path = out / "subbands.png"
    Image.fromarray(image).save(png_path)
    logger.info("song:      %s (%.1f s, %d Hz)", wav_path, args.seconds, song.sample_rate)
    logger.info("sub-bands: %s (%dx%d, %d levels of LL/LH/HL/HH)", png_path, image.shape[1], image.shape[0], args.levels)
    logger.info("done in %.2f s", time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
