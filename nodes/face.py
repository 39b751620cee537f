"""Face nodes: the SynthSinger default clip, rendering a 3DMM motion on a face, and cropping a real
portrait's face out and pasting a generated one back."""

from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np
import torch
from comfy_api.latest import InputImpl, Types, io

from ..singer_core.face.crop import HALLO_EXPAND_RATIO, expand_box, paste_back, square_crop
from ..singer_core.face.detect import detect_faces
from ..singer_core.face.detector_files import SCRFD_NAME, YUNET_NAME, NoFaceDetectorError
from ..singer_core.face.motion_types import FaceIdentity, SingerMotion
from ..singer_core.face.user_box import box_from_landmarks, box_from_mask, check_box, parse_box_text
from .comfy_bridge import (
    SINGER_MODEL_FOLDER,
    FaceCrop,
    FaceIdentityType,
    Motion,
    comfy_progress,
    image_from_uint8,
    image_to_uint8,
    model_folder_paths,
)
from .web_preview import audio_preview_ui, merge_ui, video_preview_ui

logger = logging.getLogger(__name__)

RENDER_BATCH = 16  # frames per render call: memory stays bounded at any clip length


def _identity_from_seed(seed: int) -> FaceIdentity:
    from ..singer_core.data.synthetic import make_identity  # lazy: SynthSinger is heavy to import

    identity = make_identity(seed)
    return FaceIdentity(id=identity.id_coeffs, tex=identity.tex_coeffs, gamma=identity.gamma,
                        background=tuple(float(c) for c in identity.background_rgb), name=identity.name)


DETECTORS = ["auto", "scrfd", "yunet", "haar"]
FACE_BOX_TOOLTIP = ("Optional face box 'x, y, w, h' in pixels of the image (left, top, width, height). Set it (or "
                    "connect face_mask) to skip the face detector. Empty: detect.")
FACE_MASK_TOOLTIP = ("Optional mask over the face (e.g. painted in the mask editor of Load Image); its bounding "
                     "box is the face box, no detector needed. Wins over face_box.")


def user_face_box(face_box: str | None, face_mask, width: int, height: int, who: str):
    """The face box the user gave (face_mask's bounding box, else the face_box text), or None to detect."""
    if face_mask is not None:
        mask = face_mask[0] if getattr(face_mask, "ndim", 0) == 3 else face_mask
        if tuple(mask.shape) != (height, width):
            raise ValueError(f"{who}: face_mask is {mask.shape[-1]}x{mask.shape[0]} but the image is {width}x{height}; "
                             "use the mask of the same image (Load Image's MASK output)")
        return check_box(box_from_mask(mask, who), width, height, who)
    return parse_box_text(face_box, width, height, who)


def detect_face_box(portrait: np.ndarray, detector: str, who: str):
    """The largest face in an (H, W, 3) uint8 portrait with detector 'auto' / 'scrfd' / 'yunet' / 'haar', the SCRFD
    and YuNet files looked up in the models/singer folders; None when no face is found."""
    try:
        boxes = detect_faces(portrait, detector=detector, models_dirs=tuple(model_folder_paths(SINGER_MODEL_FOLDER)))
    except NoFaceDetectorError as error:
        raise NoFaceDetectorError(f"{who}: {error}") from None
    return boxes[0] if boxes else None


class SingerSynthSinger(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerSynthSinger",
            display_name="SynthSinger Clip (SINGER default)",
            category="SINGER/face",
            description=("The embedded default data: a synthetic singer (procedural 3DMM face) sings a synthesised "
                         "song; jaw follows the sung vowels, lips their shape, brows the pitch, the head nods on "
                         "beats. Gives the reference portrait, the song, the ground-truth video and its motion."),
            inputs=[
                io.Float.Input("seconds", default=4.0, min=0.2, max=120.0, step=0.1, tooltip="Clip length."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                             tooltip="Identity, song and motion."),
                io.Int.Input("size", default=256, min=64, max=512, step=16,
                             tooltip="Frame width and height in pixels."),
                io.Combo.Input("style", options=["singing", "speech"], default="singing",
                               tooltip="Sung vowels with vibrato, or fast speech-like syllables."),
                io.Boolean.Input("backing", default=False,
                                 tooltip="Mix chords, bass and drums under the voice (the motion follows the voice)."),
                io.Boolean.Input("textured_background", default=False,
                                 tooltip="A smooth colour texture behind the head instead of a flat colour."),
            ],
            outputs=[
                io.Image.Output("reference", display_name="portrait", tooltip="The first frame: the portrait to animate."),
                io.Audio.Output("song", display_name="song", tooltip="The song (16 kHz)."),
                io.Video.Output("video", display_name="video", tooltip="The ground-truth singing video with its song (25 fps)."),
                Motion.Output("motion", display_name="motion", tooltip="The ground-truth 3DMM expression + head pose per frame."),
                FaceIdentityType.Output("identity", display_name="face identity", tooltip="The synthetic face, for Render Motion (SINGER)."),
                io.Mask.Output("face_mask", display_name="face mask",
                               tooltip="The reference's face box (from the renderer's landmarks) as a mask: connect it "
                                       "to Sample SINGER Video / Face Crop and no face detector is needed."),
            ],
        )

    @classmethod
    def execute(cls, seconds, seed, size, style, backing, textured_background) -> io.NodeOutput:
        from ..singer_core.audio.io import audio_to_comfy
        from ..singer_core.data.synthetic import SynthSingerConfig, generate_clip

        config = SynthSingerConfig(clips=1, size=size + size % 2, seconds=seconds, seed=seed, backing=backing,
                                   style=style, textured_background=textured_background)
        clip = generate_clip(config, 0, progress=comfy_progress())
        frames = image_from_uint8(clip.frames)  # (T, H, W, 3)
        audio = audio_to_comfy(clip.song.mix, clip.meta.sample_rate)
        video = InputImpl.VideoFromComponents(
            Types.VideoComponents(images=frames, audio=audio, frame_rate=Fraction(config.fps).limit_denominator(1001)))
        coeffs = clip.coeffs
        motion = SingerMotion(exp=coeffs["exp"], angle=coeffs["angle"], trans=coeffs["trans"], fps=config.fps,
                              source=f"synthsinger ground truth ({clip.meta.clip_id})")
        identity = FaceIdentity(id=coeffs["id"], tex=coeffs["tex"], gamma=coeffs["gamma"],
                                background=tuple(float(c) for c in clip.meta.extra["background_rgb"]),
                                name=clip.meta.identity)
        preview = merge_ui(video_preview_ui(frames, config.fps, audio, "singer_synthsinger"),
                           audio_preview_ui(audio, "singer_synthsinger", label="song"))
        box = box_from_landmarks(clip.landmarks[0].double().numpy())
        face_mask = torch.zeros(1, frames.shape[1], frames.shape[2])
        x0, y0 = max(0, int(np.floor(box.x))), max(0, int(np.floor(box.y)))
        face_mask[0, y0:int(np.ceil(box.y + box.h)), x0:int(np.ceil(box.x + box.w))] = 1.0
        return io.NodeOutput(frames[:1].clone(), audio, video, motion, identity, face_mask, ui=preview)


class SingerRenderMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerRenderMotion",
            display_name="Render Motion (SINGER)",
            category="SINGER/face",
            description=("Render a 3DMM motion (expression + head pose per frame) on a face with the built-in "
                         "procedural morphable model and SH lighting: a quick look at what a motion model "
                         "produced, or driving frames for the video models."),
            inputs=[
                Motion.Input("motion", tooltip="SINGER_MOTION: from SynthSinger Clip or a motion model."),
                io.Int.Input("size", default=256, min=64, max=512, step=16, tooltip="Frame size in pixels."),
                io.Int.Input("identity_seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Which synthetic face to use when no identity is connected."),
                FaceIdentityType.Input("identity", optional=True,
                                       tooltip="A face (e.g. from SynthSinger Clip); overrides identity_seed."),
                io.Audio.Input("audio", optional=True,
                               tooltip="The song the motion was made for: attached to the video output."),
            ],
            outputs=[
                io.Image.Output("frames", display_name="frames", tooltip="One image per motion frame."),
                io.Video.Output("video", display_name="video", tooltip="The frames at the motion's fps, with the audio if connected "
                                                 "(for Save Video / Preview)."),
            ],
        )

    @classmethod
    def execute(cls, motion, size, identity_seed, identity=None, audio=None) -> io.NodeOutput:
        from ..singer_core.face.procedural import procedural_model
        from ..singer_core.face.render import render_coeffs

        if audio is not None:
            motion.check_audio_length(audio["waveform"].shape[-1], audio["sample_rate"], "SingerRenderMotion")
        identity = identity if identity is not None else _identity_from_seed(identity_seed)
        model = procedural_model(seed=0)
        coeffs = identity.coefficients(motion)
        frames = torch.empty(motion.frames, size, size, 3)
        progress = comfy_progress(motion.frames)
        for start in range(0, motion.frames, RENDER_BATCH):
            stop = min(motion.frames, start + RENDER_BATCH)
            out = render_coeffs(model, coeffs[start:stop], image_size=size, background=identity.background)
            frames[start:stop] = out.images.clamp(0, 1).permute(0, 2, 3, 1)
            progress(stop, motion.frames)
        video = InputImpl.VideoFromComponents(Types.VideoComponents(
            images=frames, audio=audio, frame_rate=Fraction(motion.fps).limit_denominator(1001)))
        return io.NodeOutput(frames, video, ui=video_preview_ui(frames, motion.fps, audio, "singer_render_motion"))


class SingerFaceCrop(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerFaceCrop",
            display_name="Face Crop (SINGER)",
            category="SINGER/face",
            description=("Find the face in a portrait (your face box / mask, else a detector: Hallo's SCRFD or "
                         "YuNet from models/singer, or OpenCV 4's Haar cascade), expand its box (1.2 as Hallo), cut "
                         "a square and resize it: the input the video models expect. Face Paste puts results back."),
            inputs=[
                io.Image.Input("image", tooltip="The portrait (the first image of a batch is used)."),
                io.Float.Input("expand_ratio", default=HALLO_EXPAND_RATIO, min=1.0, max=3.0, step=0.05,
                               tooltip="How much larger than the face box the crop is (Hallo: 1.2)."),
                io.Int.Input("size", default=512, min=64, max=1024, step=16, tooltip="Crop size in pixels."),
                io.Combo.Input("detector", options=DETECTORS, default="auto", optional=True,
                               tooltip=f"auto: Hallo's {SCRFD_NAME} if it is in models/singer/face_analysis/models/ "
                                       f"(Load SINGER Video Model's allow_download fetches it), else {YUNET_NAME} "
                                       "in models/singer/, else the Haar cascade (OpenCV 4 only). Not used when a "
                                       "face box or mask is given."),
                io.String.Input("face_box", default="", optional=True, tooltip=FACE_BOX_TOOLTIP),
                io.Mask.Input("face_mask", optional=True, tooltip=FACE_MASK_TOOLTIP),
            ],
            outputs=[
                io.Image.Output("face", display_name="face", tooltip="The square face crop."),
                FaceCrop.Output("crop", display_name="crop box", tooltip="Where the crop came from, for Face Paste (SINGER)."),
            ],
        )

    @classmethod
    def execute(cls, image, expand_ratio, size, detector="auto", face_box="", face_mask=None) -> io.NodeOutput:
        who = "SingerFaceCrop"
        portrait = image_to_uint8(image, who)[0]
        height, width = portrait.shape[:2]
        box = user_face_box(face_box, face_mask, width, height, who)
        if box is None:
            box = detect_face_box(portrait, detector, who)
        if box is None:
            raise ValueError(f"{who}: no face found in the {width}x{height} image; use a frontal portrait where the "
                             "face covers at least a tenth of the shorter side, or give face_box / face_mask")
        crop, transform = square_crop(portrait, expand_box(box, expand_ratio), size)
        face = image_from_uint8(crop)
        return io.NodeOutput(face, transform)


class SingerFacePaste(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SingerFacePaste",
            display_name="Face Paste (SINGER)",
            category="SINGER/face",
            description="Paste generated face frames back into the original portrait with a feathered edge.",
            inputs=[
                io.Image.Input("image", tooltip="The original portrait (first image used)."),
                io.Image.Input("faces", tooltip="Generated face crops (square, any size), or whole frames the size of "
                                                "the portrait (e.g. Render Motion): only their crop box is pasted."),
                FaceCrop.Input("crop", tooltip="From Face Crop (SINGER) on the same portrait."),
                io.Float.Input("feather", default=0.1, min=0.0, max=0.5, step=0.01,
                               tooltip="Width of the soft edge as a share of the crop side."),
            ],
            outputs=[io.Image.Output("frames", display_name="frames", tooltip="The portrait with each generated face pasted in.")],
        )

    @classmethod
    def execute(cls, image, faces, crop, feather) -> io.NodeOutput:
        who = "SingerFacePaste"
        portrait = image_to_uint8(image, who)[0]
        if portrait.shape[:2] != (crop.image_height, crop.image_width):
            raise ValueError(f"{who}: the image is {portrait.shape[1]}x{portrait.shape[0]} but the crop was cut "
                             f"from a {crop.image_width}x{crop.image_height} image; connect the same portrait")
        generated = image_to_uint8(faces, who)
        out = np.empty((generated.shape[0], *portrait.shape), dtype=np.uint8)
        progress = comfy_progress(len(generated))
        whole_frames = generated.shape[1:3] == portrait.shape[:2]  # not crops: frames aligned with the portrait
        for index, face in enumerate(generated):
            if whole_frames:  # a frame aligned with the portrait: paste its face region only, not the whole frame
                face = square_crop(face, (crop.x0, crop.y0, crop.side, crop.side), crop.size)[0]
            out[index] = paste_back(portrait, face, crop, feather=feather)
            progress(index + 1, len(generated))
        return io.NodeOutput(image_from_uint8(out))
