"""Audio nodes: load a song, synthesise the embedded default song, isolate vocals, load and run
an audio encoder (wav2vec2 / HuBERT / the built-in 80-bin mel front end)."""

from __future__ import annotations

import hashlib
import logging

import torch
from comfy_api.latest import io, ui

from .comfy_bridge import (
    AUDIO_ENCODER_FOLDER,
    DEVICE_CHOICES,
    SEPARATOR_FOLDER,
    AudioEncoder,
    AudioFeatures,
    comfy_progress,
    input_file_path,
    model_files,
    model_folder,
    model_subfolders,
    resolve_model_path,
    torch_device,
)
from .web_preview import audio_preview_ui, merge_ui

logger = logging.getLogger(__name__)

SAMPLE_RATES = ["original", "16000", "22050", "24000", "32000", "44100", "48000"]
DSP_SEPARATOR = "dsp (built-in, no weights)"
MEL_ENCODER = "mel-80 (built-in, no weights)"
HUB_ENCODERS = ["facebook/wav2vec2-base-960h", "facebook/hubert-large-ls960-ft"]


def _input_audio_files() -> list[str]:
    import os

    import folder_paths

    input_dir = folder_paths.get_input_directory()
    files = [f for f in os.listdir(input_dir) if os.path.isfile(os.path.join(input_dir, f))]
    return sorted(folder_paths.filter_files_content_types(files, ["audio", "video"]))


def _items(audio, who: str):
    from ..singer_core.audio.io import audio_from_comfy

    waveform, sample_rate = audio_from_comfy(audio, who)
    return [item for item in waveform], sample_rate


class SingerLoadAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerLoadAudio",
            display_name="Load Song (SINGER)",
            category="SINGER/audio",
            description=("Decode a song from ComfyUI's input folder (wav, flac, mp3, ogg, opus, m4a/aac, or the "
                         "audio track of mp4/mov/mkv), then resample, mix to mono, trim and normalise it. "
                         "Reports silence and clipping instead of failing later."),
            inputs=[
                io.Combo.Input("audio", options=_input_audio_files(), upload=io.UploadType.audio,
                               tooltip="A file in ComfyUI/input (use the upload button). Paths outside that "
                                       "folder are refused."),
                io.Combo.Input("sample_rate", options=SAMPLE_RATES, default="original",
                               tooltip="Resample to this rate (Hz); the audio encoders resample to 16000 "
                                       "themselves, so 'original' is fine for them."),
                io.Boolean.Input("mono", default=True, tooltip="Mix the channels down to one."),
                io.Float.Input("start_seconds", default=0.0, min=0.0, max=36000.0, step=0.01,
                               tooltip="Skip this much from the start of the song."),
                io.Float.Input("duration_seconds", default=0.0, min=0.0, max=36000.0, step=0.01,
                               tooltip="Keep this many seconds after the start (0 = to the end)."),
                io.Combo.Input("normalize", options=["none", "peak -1 dBFS", "loudness -23 LUFS",
                                                     "loudness -14 LUFS"], default="none",
                               tooltip="Peak normalisation or ITU-R BS.1770 loudness normalisation "
                                       "(with a -1 dBFS peak limit; clips under 0.4 s are left as they are)."),
                io.Combo.Input("on_damage", options=["error", "silence"], default="error", optional=True,
                               tooltip="A damaged or truncated file: 'error' stops with the seconds that "
                                       "decoded; 'silence' keeps the song, with the damaged parts silent."),
            ],
            outputs=[
                io.Audio.Output("song", display_name="song", tooltip="The song as ComfyUI AUDIO."),
                io.String.Output("info", display_name="info", tooltip="One line: duration, rate, channels, level, silence/clipping."),
            ],
        )

    @classmethod
    def validate_inputs(cls, audio) -> bool | str:
        # Only `audio` is named: ComfyUI then skips its own list check for it alone (uploads made after
        # the list was drawn are valid) and still range-checks every other input.
        try:
            input_file_path(audio, "SingerLoadAudio")
        except ValueError as error:
            return str(error)
        return True

    @classmethod
    def fingerprint_inputs(cls, audio, **_):
        digest = hashlib.sha256()
        with open(input_file_path(audio, "SingerLoadAudio"), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    @classmethod
    def execute(cls, audio, sample_rate, mono, start_seconds, duration_seconds, normalize,
                on_damage="error") -> io.NodeOutput:
        from ..singer_core.audio.decode import decode_audio
        from ..singer_core.audio.io import (
            audio_to_comfy,
            check_audio,
            normalize_loudness,
            normalize_peak,
            resample,
            to_mono,
        )

        who = "SingerLoadAudio"
        path = input_file_path(audio, who)
        try:
            decoded = decode_audio(path, start_seconds=start_seconds,
                                   duration_seconds=duration_seconds if duration_seconds > 0 else None,
                                   on_damage=on_damage, progress=comfy_progress())
        except ValueError as error:
            raise ValueError(f"{who}: {error}") from error
        waveform, rate = decoded.waveform, decoded.sample_rate
        if mono:
            waveform = to_mono(waveform)
        if sample_rate != "original" and int(sample_rate) != rate:
            waveform, rate = resample(waveform, rate, int(sample_rate)), int(sample_rate)
        report = check_audio(waveform, rate, who)
        if normalize.startswith("peak") and not report.silent:
            waveform = normalize_peak(waveform, -1.0)
        elif normalize.startswith("loudness") and report.loudness_lufs is not None and not report.silent:
            waveform = normalize_loudness(waveform, rate, float(normalize.split()[1]))
        info = f"{path.name}: {check_audio(waveform, rate, who).summary()}"
        if decoded.silenced:
            info += f"; {len(decoded.silenced)} damaged span(s) replaced by silence"
        logger.info("%s: %s", who, info)
        song = audio_to_comfy(waveform, rate)
        return io.NodeOutput(song, info, ui=merge_ui(ui.PreviewText(info),
                                                     audio_preview_ui(song, "singer_load_audio", label=path.name)))


class SingerSynthSong(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerSynthSong",
            display_name="Synth Song (SINGER default)",
            category="SINGER/audio",
            description=("The embedded default song: formant-synthesised vowel singing (or fast speech-like "
                         "syllables) with optional chords, bass and drums on a beat grid. Needs no files; "
                         "deterministic under the seed."),
            inputs=[
                io.Float.Input("seconds", default=8.0, min=0.1, max=600.0, step=0.1,
                               tooltip="Length of the song."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                             tooltip="Melody, vowels, rests and drum pattern."),
                io.Combo.Input("style", options=["singing", "speech"], default="singing",
                               tooltip="'singing': held vowels with vibrato; 'speech': fast syllables, flat pitch "
                                       "(the contrast SINGER's paper draws)."),
                io.Float.Input("tempo_bpm", default=96.0, min=40.0, max=220.0, step=1.0,
                               tooltip="Beats per minute of the melody and the backing."),
                io.Boolean.Input("backing", default=False,
                                 tooltip="Add chords, bass and drums (try Isolate Vocals on it)."),
                io.Float.Input("backing_db", default=-6.0, min=-40.0, max=20.0, step=0.5,
                               tooltip="Level of the backing relative to the vocals, in dB."),
                io.Boolean.Input("stereo", default=False,
                                 tooltip="Stereo mix: vocals centred, chord voices panned left and right."),
                io.Combo.Input("sample_rate", options=["16000", "22050", "44100", "48000"], default="16000",
                               tooltip="Output rate in Hz."),
            ],
            outputs=[
                io.Audio.Output("song", display_name="song", tooltip="The mix (vocals + backing)."),
                io.Audio.Output("vocals", display_name="vocals", tooltip="The vocal stem alone (ground truth for separation)."),
                io.Audio.Output("accompaniment", display_name="accompaniment", tooltip="The backing stems summed (silence without backing)."),
            ],
        )

    @classmethod
    def execute(cls, seconds, seed, style, tempo_bpm, backing, backing_db, stereo, sample_rate) -> io.NodeOutput:
        from ..singer_core.audio.io import audio_to_comfy
        from ..singer_core.audio.synth import SongConfig, synthesize_song

        config = SongConfig(seconds=seconds, seed=seed, style=style, tempo_bpm=tempo_bpm, backing=backing,
                            backing_db=backing_db, stereo=stereo, sample_rate=int(sample_rate))
        song = synthesize_song(config, progress=comfy_progress())
        rate = song.sample_rate
        mix, vocals, accompaniment = (audio_to_comfy(song.mix, rate), audio_to_comfy(song.vocals, rate),
                                      audio_to_comfy(song.accompaniment, rate))
        preview = [audio_preview_ui(mix, "singer_synth_song", label="song")]
        if backing:
            preview += [audio_preview_ui(vocals, "singer_synth_song", label="vocals"),
                        audio_preview_ui(accompaniment, "singer_synth_song", label="accompaniment")]
        return io.NodeOutput(mix, vocals, accompaniment, ui=merge_ui(*preview))


class SingerIsolateVocals(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerIsolateVocals",
            display_name="Isolate Vocals (SINGER)",
            category="SINGER/audio",
            description=("Split a song into vocals and accompaniment before encoding it, as SINGER and Hallo do. "
                         "The built-in DSP method needs no weights; an MDX-Net ONNX file such as Kim_Vocal_2.onnx "
                         "placed in models/audio_separator runs through OpenCV. vocals + accompaniment = input."),
            inputs=[
                io.Audio.Input("audio", tooltip="The song (any rate, mono or stereo)."),
                io.Combo.Input("method", options=[DSP_SEPARATOR] + model_files(SEPARATOR_FOLDER, (".onnx",)),
                               default=DSP_SEPARATOR,
                               tooltip="Built-in DSP (stereo centre + harmonic/percussive + vocal band) or an "
                                       "MDX-Net .onnx from ComfyUI/models/audio_separator (Hallo's "
                                       "Kim_Vocal_2.onnx)."),
                io.Boolean.Input("denoise", default=False,
                                 tooltip="MDX-Net only: average the model on x and -x (twice the time, less noise)."),
            ],
            outputs=[
                io.Audio.Output("vocals", display_name="vocals", tooltip="The isolated voice."),
                io.Audio.Output("accompaniment", display_name="accompaniment", tooltip="Everything else (input minus vocals)."),
            ],
        )

    @classmethod
    def execute(cls, audio, method, denoise) -> io.NodeOutput:
        from ..singer_core.audio.io import audio_to_comfy, check_audio
        from ..singer_core.audio.separation import separate_vocals_dsp
        from ..singer_core.audio.separation_mdx import MdxNetSeparator

        who = "SingerIsolateVocals"
        items, rate = _items(audio, who)
        if method == DSP_SEPARATOR:
            run = lambda item, progress: separate_vocals_dsp(item, rate, progress=progress)  # noqa: E731
        else:
            path = resolve_model_path(SEPARATOR_FOLDER, method)
            if path is None:
                raise ValueError(f"{who}: '{method}' is not in {model_folder(SEPARATOR_FOLDER)}; put the .onnx "
                                 "file there (Hallo's: `hf download fudan-generative-ai/hallo "
                                 f"audio_separator/Kim_Vocal_2.onnx --local-dir {model_folder(SEPARATOR_FOLDER).parent}`)"
                                 " and refresh the node list")
            separator = MdxNetSeparator.from_onnx(path, denoise=denoise)
            run = lambda item, progress: separator.separate(item, rate, progress=progress)  # noqa: E731
        vocals, accompaniment = [], []
        for item in items:
            check_audio(item, rate, who)
            result = run(item, comfy_progress())
            vocals.append(result.vocals)
            accompaniment.append(result.accompaniment)
        vocals_audio = audio_to_comfy(torch.stack(vocals), rate)
        accompaniment_audio = audio_to_comfy(torch.stack(accompaniment), rate)
        return io.NodeOutput(vocals_audio, accompaniment_audio, ui=merge_ui(
            audio_preview_ui(vocals_audio, "singer_isolate_vocals", label="vocals"),
            audio_preview_ui(accompaniment_audio, "singer_isolate_vocals", label="accompaniment")))


class SingerAudioEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        local = model_subfolders(AUDIO_ENCODER_FOLDER) + model_files(AUDIO_ENCODER_FOLDER, (".safetensors",))
        return io.Schema(
            node_id="SingerAudioEncoderLoader",
            display_name="Load Audio Encoder (SINGER)",
            category="SINGER/audio",
            description=("wav2vec2 (Hallo/SINGER, FD2Talk), HuBERT (ER-NeRF/DAMC content encoder) or the built-in "
                         "80-bin mel front end (DAMC dynamic encoder). Hub models are downloaded only here, into "
                         "ComfyUI/models/audio_encoders; a folder or .safetensors already there is used as is."),
            inputs=[
                io.Combo.Input("encoder", options=[MEL_ENCODER] + HUB_ENCODERS + local, default=MEL_ENCODER,
                               tooltip="A hub id, a transformers folder (config.json + weights) or a single "
                                       ".safetensors file in ComfyUI/models/audio_encoders."),
                io.Boolean.Input("allow_download", default=True,
                                 tooltip="Download a hub id that is not in models/audio_encoders yet. Off: an "
                                         "offline error says what to place where."),
                io.Combo.Input("dtype", options=["auto", "float32", "float16", "bfloat16"], default="auto",
                               tooltip="auto: float16 on a GPU, float32 on the CPU."),
                io.Combo.Input("device", options=DEVICE_CHOICES, default="auto",
                               tooltip="auto: ComfyUI's torch device."),
            ],
            outputs=[AudioEncoder.Output("audio_encoder", display_name="audio encoder", tooltip="An audio encoder for Encode Audio (SINGER).")],
        )

    @classmethod
    def execute(cls, encoder, allow_download, dtype, device) -> io.NodeOutput:
        from ..singer_core.audio.encoder_loading import download_audio_encoder, load_audio_encoder
        from ..singer_core.audio.encoders import MelEncoder

        who = "SingerAudioEncoderLoader"
        target = torch.device(torch_device(device))
        if dtype == "auto":
            torch_dtype = torch.float16 if target.type == "cuda" else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        if encoder == MEL_ENCODER:
            return io.NodeOutput(MelEncoder())
        models_dir = model_folder(AUDIO_ENCODER_FOLDER)
        source = resolve_model_path(AUDIO_ENCODER_FOLDER, encoder)
        if source is None and encoder in HUB_ENCODERS:
            local = models_dir / encoder.split("/")[-1]
            if (local / "config.json").is_file():
                source = local
            elif allow_download:
                source = download_audio_encoder(encoder, models_dir, progress=comfy_progress())
            else:
                raise ValueError(
                    f"{who}: '{encoder}' is not in {models_dir} and allow_download is off. On a connected "
                    f"machine run `hf download {encoder} --local-dir {local}` and copy that folder "
                    "here, or switch allow_download on")
        if source is None:
            raise ValueError(f"{who}: '{encoder}' was not found in {models_dir}; refresh the node list")
        try:
            model = load_audio_encoder(source, models_dir=models_dir, dtype=torch_dtype, device=target)
        except (ValueError, OSError) as error:
            raise ValueError(f"{who}: {error}") from error
        return io.NodeOutput(model)


class SingerAudioEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerAudioEncode",
            display_name="Encode Audio (SINGER)",
            category="SINGER/audio",
            description=("Per-video-frame audio features: frames = ceil(seconds x fps). wav2vec2 gives Hallo's "
                         "(frames, 12 layers, 768); HuBERT with 2 steps per frame gives ER-NeRF's "
                         "(frames, 2, 1024); mel-80 gives Wav2Lip's (frames, 16, 80). Long songs run in "
                         "overlapping chunks, so memory does not grow with length."),
            inputs=[
                AudioEncoder.Input("encoder", tooltip="From Load Audio Encoder (SINGER)."),
                io.Audio.Input("audio", tooltip="Ideally the isolated vocals; any rate (resampled to 16 kHz)."),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.01,
                               tooltip="Video frame rate the features are aligned to (SINGER/Hallo: 25)."),
                io.Combo.Input("layers", options=["all", "last"], default="all",
                               tooltip="'all': every transformer layer (Hallo/SINGER); 'last': the final one."),
                io.Combo.Input("interpolation", options=["hallo", "after"], default="hallo",
                               tooltip="'hallo': interpolate the 50 Hz CNN features to the frame rate before "
                                       "the transformer, exactly as Hallo/SINGER; 'after': run at 50 Hz and "
                                       "interpolate the hidden states."),
                io.Int.Input("steps_per_frame", default=1, min=1, max=4,
                             tooltip="2 with HuBERT and layers=last gives ER-NeRF/DAMC's (frames, 2, 1024)."),
                io.Float.Input("chunk_seconds", default=30.0, min=2.0, max=600.0, step=1.0,
                               tooltip="Length of the overlapping chunks a long song is encoded in."),
                io.Boolean.Input("allow_silence", default=False, optional=True,
                                 tooltip="Encode digitally silent audio instead of stopping with an error "
                                         "(silence usually means a wrong track or a failed separation)."),
            ],
            outputs=[AudioFeatures.Output("features", display_name="features", tooltip="SINGER_AUDIO_FEATURES: per-frame features + fps.")],
        )

    @classmethod
    def execute(cls, encoder, audio, fps, layers, interpolation, steps_per_frame, chunk_seconds,
                allow_silence=False) -> io.NodeOutput:
        who = "SingerAudioEncode"
        items, rate = _items(audio, who)
        if len(items) > 1:
            logger.warning("%s: the AUDIO batch has %d items; encoding the first", who, len(items))
        try:
            features = encoder.encode(items[0], rate, fps, layers=layers, interpolate=interpolation,
                                      steps_per_frame=steps_per_frame, chunk_seconds=chunk_seconds,
                                      allow_silence=allow_silence, progress=comfy_progress())
        except ValueError as error:
            raise ValueError(f"{who}: {error}") from error
        return io.NodeOutput(features)

