"""`make demo` (``python -m singer_core.demo``): the main job on the embedded default.

Today, the audio front end on a SynthSinger song, written to ``out/``: the song (sung vowels
over chords, bass and drums, stereo), its vocals isolated by the built-in DSP separator (with the
SDR improvement against the true vocal stem), per-frame mel-80 audio features at 25 fps, the
Haar sub-band view (SINGER §3.1) of the song, and a SynthSinger clip (the procedural 3DMM
singer performing a song: video.mp4 with sound, coefficients, landmarks), and the motion DiT (FD2Talk stage 1)
sampling head and face motion from the song, rendered as motion_preview.mp4 with the song (the small model is
trained once on SynthSinger and cached in out/models/), the DAMC NeRF of a SynthSinger subject driven by the song
(nerf_preview.mp4), and SINGER itself: the portrait + the song's vocals through the tiny SINGER stack (reference
UNet, denoising UNet3D with audio modules, MSM and SFM, VAE), written as singer_video.mp4 with the song.
FD2Talk's second stage animates a portrait with that sampled motion through the frame Diffusion UNet
(fd2talk_video.mp4; the tiny frame model is trained once per singer on CPU and cached in out/models/frames-demo).
The tiny stack is trained once on CPU (a few minutes; cached in out/models/singer-demo) on one SynthSinger singer,
so the portrait is that singer's; any other face needs the official full-size weights (README).
"""

from __future__ import annotations

import argparse
import logging
import math
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
    parser.add_argument("--motion-preset", default="demo",
                        help="trainer preset of the motion model (default: demo, about a CPU minute; tiny: seconds)")
    parser.add_argument("--nerf-steps", type=int, default=None,
                        help="training steps of the demo NeRF (default: the nerf task's demo preset)")
    parser.add_argument("--singer-steps", type=int, default=None,
                        help="training steps of the tiny SINGER stack and its VAE (default: the singer task's tiny "
                             "preset, a few CPU minutes)")
    parser.add_argument("--sample-steps", type=int, default=20, help="DDIM steps of the SINGER and FD2Talk videos")
    parser.add_argument("--frames-steps", type=int, default=None,
                        help="training steps of the FD2Talk frame model, its autoencoder and VAE (default: the frames "
                             "task's tiny preset, several CPU minutes)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the demo's tiny models run 2-3x faster on one thread "
                             "than on two on a 2-core machine; 0 = torch's default)")
    args = parser.parse_args(argv)
    # every argument is checked before anything is written (a bad --levels must not fail after three files)
    if not (math.isfinite(args.seconds) and 1.0 <= args.seconds <= 600.0):
        parser.error(f"--seconds must be between 1 and 600 (the demo song's length), got {args.seconds:g}; "
                     "e.g. --seconds 6")
    if not 1 <= args.levels <= 8:
        parser.error(f"--levels must be between 1 and 8 (wavelet levels of the sub-band view), got {args.levels}; "
                     "e.g. --levels 3")
    for name in ("nerf_steps", "singer_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.sample_steps < 1 or args.threads < 0:
        parser.error(f"--sample-steps must be >= 1 and --threads >= 0, got {args.sample_steps} and {args.threads}")
    demo_logger = logging.getLogger(__package__)  # the demo package's loggers only; never the root (basicConfig)
    if not demo_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        demo_logger.addHandler(handler)
    demo_logger.setLevel(logging.INFO)

    import torch

    from ..io.cli import report_errors
    from ..io.lock import folder_lock

    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    code = [0]
    try:
        with report_errors(code), folder_lock(args.out, "demo"):  # one demo per output folder
            return _run(args)
    finally:
        torch.set_num_threads(threads)
    return code[0]


def _run(args) -> int:
    """Every step of the demo (main parses the arguments and sets the threads)."""
    from PIL import Image

    from ..audio.encoders import MelEncoder
    from ..audio.io import write_wav
    from ..audio.separation import separate_vocals_dsp
    from ..audio.synth import SongConfig, synthesize_song
    from ..spectral.visualize import SubbandViewConfig, audio_subband_image

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    # 1. the embedded song: vocals + backing, with its true stems
    song = synthesize_song(SongConfig(seconds=args.seconds, seed=args.seed, backing=True, stereo=True))
    rate = song.sample_rate
    wav_path = write_wav(out / "song.wav", song.mix, rate)

    # 2. isolate the vocals and score them against the true stem
    separation = separate_vocals_dsp(song.mix, rate)
    vocals_path = write_wav(out / "vocals.wav", separation.vocals, rate)
    gain = _sdr_db(song.vocals, separation.vocals) - _sdr_db(song.vocals, song.mix)

    # 3. per-frame features (Wav2Lip/DAMC mel-80 front end: no weights needed)
    features = MelEncoder().encode(separation.vocals, rate, 25)
    features_path = out / "features.safetensors"
    features.save(features_path)

    # 4. the sub-band view of the song
    image = audio_subband_image(song.mix, rate, SubbandViewConfig(levels=args.levels))
    png_path = _save_png(Image.fromarray(image), out / "subbands.png")

    # 5. a SynthSinger clip: the synthetic singer performing a song (video with sound + ground truth)
    from ..data.synthetic import SynthSingerConfig, generate_clip, write_synth_clip

    clip = generate_clip(SynthSingerConfig(clips=1, size=256, seconds=args.seconds, seed=args.seed, backing=True), 0)
    clip_path = write_synth_clip(out / "synthsinger", clip, overwrite=True)

    # 6. the motion DiT (FD2Talk stage 1): a small model trained once on SynthSinger (cached under out/), then
    #    sampled from the demo song's features and rendered on the singer's face with the song
    motion_path, motion_frames, motion = _motion_preview(out, song, rate, clip, args.seed, args.motion_preset)
    # 6b. FD2Talk stage 2: that motion animates a portrait of the frame model's singer (trained once, cached)
    fd2talk_path = _fd2talk_video(out, song, rate, motion, args)

    # 7. DAMC: a tri-plane hash-grid NeRF of one SynthSinger subject (trained once, cached in out/models),
    #    driven by the song's audio features
    from .nerf_subject import render_nerf_video, train_demo_nerf

    nerf_dir = out / "models" / "nerf-demo"
    if not (nerf_dir / "config.json").is_file():
        logger.info("nerf:      training the demo NeRF once (about a CPU minute; cached in %s)", nerf_dir)
        train_demo_nerf(nerf_dir, cache_dir=out / "cache", steps=args.nerf_steps)
    nerf_path = render_nerf_video(nerf_dir, song.mix, rate, out / "nerf_preview.mp4")

    # 8. SINGER: portrait + song -> singing video through the tiny stack (trained once, cached in out/models)
    singer_path, singer_frames = _singer_video(out, song, separation.vocals, rate, args)

    logger.info("song:      %s (%.1f s, %d Hz, stereo, vocals + chords/bass/drums)", wav_path, args.seconds, rate)
    logger.info("vocals:    %s (built-in separator, SDR improvement %+.1f dB)", vocals_path, gain)
    logger.info("features:  %s (%d frames x %d x %d at %g fps, %s)", features_path, *features.features.shape,
                float(features.fps), features.encoder)
    logger.info("sub-bands: %s (%dx%d, %d levels of LL/LH/HL/HH)", png_path, image.shape[1], image.shape[0], args.levels)
    logger.info("synth:     %s/video.mp4 (%d frames at 25 fps, 256 px, with its song; 3DMM ground truth beside it)",
                clip_path, clip.frames.shape[0])
    logger.info("motion:    %s (motion DiT sampled from the song, %d frames, rendered with the song)",
                motion_path, motion_frames)
    logger.info("fd2talk:   %s (the sampled motion animating a portrait through the frame Diffusion UNet)",
                fd2talk_path)
    logger.info("nerf:      %s (audio-driven NeRF of a SynthSinger subject, with the song)", nerf_path)
    logger.info("singer:    %s (SINGER tiny stack: portrait + vocals -> %d generated frames, with the song)",
                singer_path, singer_frames)
    logger.info("done in %.2f s", time.perf_counter() - start)
    return 0


def _motion_preview(out: Path, song, rate: int, clip, seed: int, preset: str) -> tuple[Path, int, object]:
    """Train (once; cached in out/models/motion-demo) and sample the motion DiT, render it with the song."""
    import shutil

    import torch

    from ..audio.io import to_mono
    from ..face.motion_types import FaceIdentity
    from ..face.procedural import procedural_model
    from ..face.render import render_coeffs
    from ..io.image import to_uint8
    from ..io.video_write import write_video
    from ..motion.generator import MotionModel
    from ..train.loop import train

    model_dir = out / "models" / f"motion-{preset}"
    if not (model_dir / "config.json").is_file():
        logger.info("motion:    training the '%s' motion model once (cached in %s)", preset, model_dir)
        final = train("motion", preset=preset, out=out / "runs" / f"motion-{preset}", cache_dir=out / "cache",
                      device="cpu", quiet=True)
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.copytree(final, model_dir)
    model = MotionModel.from_pretrained(model_dir)
    from ..audio.encoders import MelEncoder

    song_features = MelEncoder().encode(to_mono(song.mix), rate, 25)  # the motion model is trained on the mix
    motion = model.generate(song_features, steps=50, seed=seed)
    coeffs = clip.coeffs
    identity = FaceIdentity(id=coeffs["id"], tex=coeffs["tex"], gamma=coeffs["gamma"],
                            background=tuple(float(c) for c in clip.meta.extra["background_rgb"]),
                            name=clip.meta.identity)
    face = procedural_model(seed=0)
    full = identity.coefficients(motion)
    frames = torch.empty(motion.frames, 256, 256, 3, dtype=torch.uint8)
    for start in range(0, motion.frames, 16):
        rendered = render_coeffs(face, full[start:start + 16], image_size=256, background=identity.background)
        frames[start:start + 16] = torch.from_numpy(to_uint8(rendered.images.permute(0, 2, 3, 1)))
    path = write_video(out / "motion_preview.mp4", frames, motion.fps, audio=song.mix, sample_rate=rate)
    return path, motion.frames, motion


def _fd2talk_video(out: Path, song, rate: int, motion, args) -> Path:
    """Train (once; cached in out/models/frames-demo) the tiny FD2Talk frame model and animate its singer's
    portrait with the sampled motion; written at 256 px (the model's 64-px frames, upscaled) with the song."""
    import shutil

    import torch

    from ..data.synthetic import generate_clip
    from ..diffusion.fd2talk_portrait import animate_portrait, load_frame_model
    from ..io.image import to_uint8, to_unit
    from ..io.video_write import write_video
    from ..train.config import resolve_config
    from ..train.frames import FramesTask
    from ..train.loop import train

    model_dir = out / "models" / "frames-demo"
    overrides = None
    if args.frames_steps is not None:
        steps = args.frames_steps
        overrides = {"steps": steps, "autoencoder_steps": steps, "vae_steps": steps,
                     "checkpoint_every": max(1, min(steps, 100))}
    config = resolve_config(FramesTask, "tiny", overrides)
    if not (model_dir / "fd2talk_frames.json").is_file():
        logger.info("fd2talk:   training the tiny frame model once (VAE, frame autoencoder, frame UNet; several CPU "
                    "minutes; cached in %s)", model_dir)
        final = train("frames", preset="tiny", config=overrides, out=out / "runs" / "frames-demo",
                      cache_dir=out / "cache", device="cpu", quiet=True)
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.copytree(final, model_dir)
    # the portrait: the first frame of the singer the frame model was trained on
    portrait = to_unit(generate_clip(config.synth_config(), 0).frames[0])
    frames = animate_portrait(load_frame_model(model_dir), portrait, motion, steps=args.sample_steps, seed=args.seed)
    frames = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2), size=(256, 256), mode="bilinear",
                                             align_corners=False)
    frames = torch.from_numpy(to_uint8(frames.permute(0, 2, 3, 1)))
    return write_video(out / "fd2talk_video.mp4", frames, motion.fps, audio=song.mix, sample_rate=rate)


def _singer_video(out: Path, song, vocals, rate: int, args) -> tuple[Path, int]:
    """Train (once; cached in out/models/singer-demo) the tiny SINGER stack and render the portrait singing."""
    from ..data.synthetic import SynthSingerConfig, generate_clip
    from ..diffusion.model_folder import TINY_SAMPLING
    from ..train.config import resolve_config
    from ..train.singer import SingerTask
    from .singer_stack import build_tiny_stack, render_singer_video

    model_dir = out / "models" / "singer-demo"
    if not (model_dir / "config.json").is_file():
        logger.info("singer:    training the tiny SINGER stack once (VAE, then reference + denoising UNets, MSM, "
                    "SFM; a few CPU minutes; cached in %s)", model_dir)
        reported = [-1]

        def progress(done: int, total: int) -> None:
            tenth = 10 * done // max(total, 1)
            if tenth > reported[0]:
                reported[0] = tenth
                logger.info("singer:    training %3d %% (%d / %d steps)", 10 * tenth, done, total)

        build_tiny_stack(model_dir, cache_dir=out / "cache", steps=args.singer_steps, progress=progress)
    # the portrait: a frame of the singer the tiny stack was trained on (identity 0 of its SynthSinger seed)
    seed = resolve_config(SingerTask, "tiny", {}).synth_seed
    # its landmarks are known from the renderer, so no face detector is needed (OpenCV 5 has no Haar cascade)
    clip = generate_clip(SynthSingerConfig(clips=1, size=256, seconds=0.2, seed=seed), 0)
    portrait, landmarks = clip.frames[0], clip.landmarks[0].double().numpy()
    from PIL import Image

    _save_png(Image.fromarray(portrait.numpy()), out / "singer_portrait.png")
    path = render_singer_video(model_dir, portrait, song.mix, rate, out / "singer_video.mp4", steps=args.sample_steps,
                               guidance=TINY_SAMPLING.cfg, seed=args.seed, vocals=vocals, landmarks=landmarks)
    return path, math.ceil(song.mix.shape[-1] / rate * 25 - 1e-9)


def _save_png(image, path: Path) -> Path:
    """Save a PIL image as PNG through a temporary sibling and a rename (no partial file on a full disk)."""
    import io

    from ..io.checkpoint import atomic_write_bytes

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue(), who="demo")


def _sdr_db(reference, estimate) -> float:
    """Signal-to-distortion ratio in dB (plain energy ratio, no projection)."""
    error = (reference - estimate).double().pow(2).sum()
    return float(10 * (reference.double().pow(2).sum() / error.clamp_min(1e-20)).log10())
