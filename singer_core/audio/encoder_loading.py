"""Loading wav2vec 2.0 / HuBERT encoders in their published formats: a transformers folder, a hub id
in a cache or models folder, or a single .safetensors file (transformers key naming, as ComfyUI's own
models/audio_encoders files) whose config is rebuilt from tensor shapes; and the one download path."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from ..io.checkpoint import load_torch_file
from ..progress import Progress
from .encoders import (
    ENCODER_KINDS,
    ENCODER_SAMPLE_RATE,
    KNOWN_AUDIO_ENCODERS,
    MEL_ENCODER_NAME,
    AudioEncoder,
    MelEncoder,
    _report,
)

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# heads of published checkpoints that sit outside the encoder (CTC, pre-training); never loaded
IGNORED_HEADS = ("lm_head.", "quantizer.", "project_q.", "project_hid.", "final_proj.", "label_embs_concat",
                 "dropout_features", "classifier.", "projector.")
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


def infer_encoder_config(shapes: dict[str, tuple[int, ...]], kind: str,
                         num_attention_heads: int | None = None):
    """Rebuild a Wav2Vec2Config / HubertConfig from a checkpoint's tensor shapes (keys without prefix).

    Read from shapes: conv stack dims and kernels, conv bias, GroupNorm-first vs LayerNorm-everywhere
    feature extractor, hidden size, layer count, intermediate size, positional conv kernel and groups,
    HuBERT's feature-projection LayerNorm and positional BatchNorm. Conventions of every published
    wav2vec2/HuBERT checkpoint fill in the rest: conv strides are kernel // 2 for the first layer and
    2 after it (kernels 10,3,3,3,3,2,2 -> strides 5,2,2,2,2,2,2); ``do_stable_layer_norm`` is True
    exactly for the LayerNorm feature extractors (large-lv60, XLS-R, HuBERT large/xlarge); heads =
    hidden / 64 unless ``num_attention_heads`` is given (heads are not visible in the weights).
    """
    from transformers import HubertConfig, Wav2Vec2Config

    if kind not in ENCODER_KINDS:
        raise ValueError(f"infer_encoder_config: kind must be one of {ENCODER_KINDS}, got {kind!r}")

    def need(key):
        if key not in shapes:
            raise ValueError(f"infer_encoder_config: no tensor '{key}': not a complete {kind} encoder")
        return shapes[key]

    conv_dim, conv_kernel = [], []
    while (key := f"feature_extractor.conv_layers.{len(conv_dim)}.conv.weight") in shapes:
        out_channels, in_channels, kernel = shapes[key]
        if in_channels != (conv_dim[-1] if conv_dim else 1):
            raise ValueError(f"infer_encoder_config: conv layer {len(conv_dim)} takes {in_channels} "
                             f"channels, expected {conv_dim[-1] if conv_dim else 1}")
        conv_dim.append(out_channels)
        conv_kernel.append(kernel)
    need("feature_extractor.conv_layers.0.conv.weight")
    conv_stride = [max(1, conv_kernel[0] // 2)] + [2] * (len(conv_kernel) - 1)
    norms = [f"feature_extractor.conv_layers.{i}.layer_norm.weight" in shapes for i in range(len(conv_dim))]
    if all(norms) and len(norms) > 1:
        norm = "layer"
    elif norms[0] and not any(norms[1:]):
        norm = "group"
    else:
        raise ValueError(f"infer_encoder_config: conv layers with a norm {norms} fit neither the "
                         "GroupNorm-first nor the LayerNorm-everywhere feature extractor")
    hidden, projected_from = need("feature_projection.projection.weight")
    if projected_from != conv_dim[-1]:
        raise ValueError(f"infer_encoder_config: the feature projection takes {projected_from} channels, "
                         f"the conv stack gives {conv_dim[-1]}")
    layers = 0
    while f"encoder.layers.{layers}.attention.q_proj.weight" in shapes:
        layers += 1
    intermediate = need("encoder.layers.0.feed_forward.intermediate_dense.weight")[0]
    names = ("parametrizations.weight.original1", "weight_v", "weight")
    pos_key = next((f"encoder.pos_conv_embed.conv.{n}" for n in names
                    if f"encoder.pos_conv_embed.conv.{n}" in shapes), None) or \
        need("encoder.pos_conv_embed.conv.weight_v")
    _, per_group, pos_kernel = shapes[pos_key]
    if num_attention_heads is None:
        if hidden % 64:
            raise ValueError(f"infer_encoder_config: hidden size {hidden} is not a multiple of 64, so the "
                             "head count cannot be guessed; pass num_attention_heads")
        num_attention_heads = hidden // 64
    has_projection_norm = "feature_projection.layer_norm.weight" in shapes
    common = dict(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=int(num_attention_heads),
        intermediate_size=intermediate, conv_dim=conv_dim, conv_kernel=conv_kernel, conv_stride=conv_stride,
        conv_bias="feature_extractor.conv_layers.0.conv.bias" in shapes, feat_extract_norm=norm,
        do_stable_layer_norm=norm == "layer", num_conv_pos_embeddings=pos_kernel,
        num_conv_pos_embedding_groups=hidden // per_group,
        mask_time_prob=0.05 if "masked_spec_embed" in shapes else 0.0, mask_feature_prob=0.0)
    if kind == "hubert":
        batch_norm = "encoder.pos_conv_embed.batch_norm.weight" in shapes
        return HubertConfig(feat_proj_layer_norm=has_projection_norm, conv_pos_batch_norm=batch_norm,
                            **common)
    if not has_projection_norm:
        raise ValueError("infer_encoder_config: a wav2vec2 checkpoint has 'feature_projection.layer_norm'; "
                         "this one does not -- is it a HuBERT model? pass kind='hubert'")
    return Wav2Vec2Config(**common)


def _model_class(kind: str):
    from transformers import HubertModel, Wav2Vec2Model

    return {"wav2vec2": Wav2Vec2Model, "hubert": HubertModel}[kind]


def _name_list(keys, limit=8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as error:
            raise ValueError(f"load_audio_encoder: '{path}' is not a valid safetensors file or is "
                             f"truncated ({error}); download it again") from error
    if path.suffix in (".bin", ".pt", ".pth", ".ckpt"):
        state = load_torch_file(path, who="load_audio_encoder")  # refuses pickled code, names truncation
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"load_audio_encoder: '{path}' does not hold a flat dict of tensors; give the "
                             "encoder's weights (a state dict) or its .safetensors file")
        return state
    raise ValueError(f"load_audio_encoder: '{path}' is not a .safetensors/.bin/.pt file or a model folder")


def _load_file(path: Path, kind: str | None, num_attention_heads: int | None) -> AudioEncoder:
    """A single checkpoint in transformers key naming, optionally prefixed ("wav2vec2.", "hubert.")."""
    state = _read_state_dict(path)
    anchor = "feature_extractor.conv_layers.0.conv.weight"
    prefixes = sorted({key[:-len(anchor)] for key in state if key.endswith(anchor)})
    if len(prefixes) != 1:
        raise ValueError(f"load_audio_encoder: '{path}' is not a wav2vec2/HuBERT encoder: {len(prefixes)} "
                         f"'{anchor}' tensors instead of one (keys: {_name_list(state, 5)}); give a wav2vec2 or "
                         "HuBERT checkpoint (e.g. the model.safetensors of facebook/wav2vec2-base-960h) or "
                         "source='mel-80'")
    prefix = prefixes[0]
    file_kind = next((name for name in ENCODER_KINDS if name in prefix.lower()), None)
    if kind is not None and file_kind is not None and kind != file_kind:
        raise ValueError(f"load_audio_encoder: '{path}' is a {file_kind} checkpoint (keys start with "
                         f"'{prefix}') but kind='{kind}' was asked for; pass kind='{file_kind}' or kind=None")
    body = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    outside = [key for key in state if not key.startswith(prefix) and not key.startswith(IGNORED_HEADS)]
    has_projection_norm = "feature_projection.layer_norm.weight" in body
    resolved = kind or file_kind or ("wav2vec2" if has_projection_norm else "hubert")
    if (weight := body.pop("encoder.pos_conv_embed.conv.weight", None)) is not None:
        # weight norm folded into the weight: g = ||w|| over all axes but the kernel axis, v = w
        body["encoder.pos_conv_embed.conv.weight_v"] = weight
        body["encoder.pos_conv_embed.conv.weight_g"] = weight.float().norm(dim=(0, 1), keepdim=True)
    config = infer_encoder_config({key: tuple(value.shape) for key, value in body.items()}, resolved,
                                  num_attention_heads)
    with torch.device("meta"):  # no random init: every tensor is assigned from the file
        model = _model_class(resolved)(config)
    try:
        result = model.load_state_dict(body, strict=False, assign=True)
    except RuntimeError as error:
        raise ValueError(f"load_audio_encoder: tensor shapes in '{path}' do not fit the architecture "
                         f"inferred from them ({error})") from error
    unexpected = [prefix + key for key in result.unexpected_keys] + outside
    if result.missing_keys or unexpected:
        raise ValueError(f"load_audio_encoder: '{path}' does not match a {resolved} encoder: missing "
                         f"[{_name_list(result.missing_keys)}], unexpected [{_name_list(unexpected)}]")
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    if leftovers := [name for name, tensor in tensors if tensor.is_meta]:
        raise ValueError(f"load_audio_encoder: '{path}' lacks tensors [{_name_list(leftovers)}]")
    return AudioEncoder(model, kind=resolved, name=path.name)


def _load_folder(folder: Path, kind: str | None, name: str) -> AudioEncoder:
    """A transformers folder: config.json + model.safetensors / pytorch_model.bin (+ preprocessor)."""
    hint = name if _HUB_ID.fullmatch(name) else "<hub id>"
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(f"load_audio_encoder: folder '{folder}' has no config.json. Put the model's "
                         f"config.json next to its weights (`huggingface-cli download {hint} config.json "
                         f"preprocessor_config.json --local-dir {folder}`), or pass a single .safetensors "
                         "file to infer the architecture from its tensors")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"load_audio_encoder: '{config_path}' is not valid JSON ({error})") from error
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in ENCODER_KINDS:
        raise ValueError(f"load_audio_encoder: '{config_path}' has model_type {model_type!r}; this loader "
                         f"takes {' or '.join(ENCODER_KINDS)} models (or 'mel-80')")
    if kind is not None and kind != model_type:
        raise ValueError(f"load_audio_encoder: '{folder}' holds a {model_type} model but kind='{kind}' was "
                         f"asked for; pass kind='{model_type}' or kind=None")
    if not any((folder / weights).is_file() for weights in WEIGHT_FILES):
        raise FileNotFoundError(f"load_audio_encoder: folder '{folder}' has config.json but no weights "
                                "(model.safetensors or pytorch_model.bin). Download them with "
                                f"`huggingface-cli download {hint} --local-dir {folder}`")
    try:  # .bin files go through transformers, which reads them with torch.load(weights_only=True)
        model, info = _model_class(model_type).from_pretrained(str(folder), local_files_only=True,
                                                               output_loading_info=True)
    except Exception as error:  # truncated/corrupt weights, shape mismatches, unreadable files
        weights = folder / "pytorch_model.bin"
        if weights.is_file() and not (folder / "model.safetensors").is_file():
            load_torch_file(weights, who="load_audio_encoder")  # names pickled code or truncation, if that is it
        raise ValueError(f"load_audio_encoder: could not load the weights in '{folder}' "
                         f"({type(error).__name__}: {error}); download them again") from error
    missing = [key for key in info["missing_keys"] if key != "masked_spec_embed"]
    unexpected = [key for key in info["unexpected_keys"] if not key.startswith(IGNORED_HEADS)]
    if missing or unexpected or info["mismatched_keys"]:
        raise ValueError(f"load_audio_encoder: the weights in '{folder}' do not match its config.json: "
                         f"missing [{_name_list(missing)}], unexpected [{_name_list(unexpected)}], "
                         f"mismatched [{_name_list(str(m) for m in info['mismatched_keys'])}]")
    preprocessor = folder / "preprocessor_config.json"
    settings = json.loads(preprocessor.read_text()) if preprocessor.is_file() else {}
    return AudioEncoder(model, kind=model_type, name=name, do_normalize=settings.get("do_normalize", True),
                        sample_rate=int(settings.get("sampling_rate", ENCODER_SAMPLE_RATE)))


def _cached_snapshot(repo_id: str, cache_dir) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or an unreadable cache
        return None


def load_audio_encoder(source: str | Path, *, kind: str | None = None, models_dir: str | Path | None = None,
                       cache_dir: str | Path | None = None, local_files_only: bool = True,
                       dtype: torch.dtype = torch.float32, device="cpu",
                       num_attention_heads: int | None = None) -> AudioEncoder | MelEncoder:
    """Load an audio encoder.

    Args:
        source: "mel-80" (Wav2Lip's mel front end, no weights); a transformers folder (config.json +
            model.safetensors or pytorch_model.bin, optional preprocessor_config.json); one
            .safetensors (or weights-only .bin/.pt) file in transformers key naming, optionally
            prefixed "wav2vec2." / "hubert." (how ComfyUI's models/audio_encoders files are keyed),
            whose architecture is read from its tensor shapes (see :func:`infer_encoder_config`); a
            name inside ``models_dir``; or a hub id like "facebook/wav2vec2-base-960h", looked up as
            ``models_dir/<repo name>`` and in the Hugging Face cache.
        kind: "wav2vec2", "hubert" or None (from config.json / the key prefix / the tensors).
        models_dir: folder of downloaded models (ComfyUI: models/audio_encoders).
        cache_dir: Hugging Face cache to look in (None: the default cache).
        local_files_only: True (default) never downloads; False downloads a missing hub id into
            ``models_dir`` through :func:`download_audio_encoder`.
        dtype, device: where the model runs.
        num_attention_heads: for single files whose hidden size is not 64 x heads.

    Raises:
        FileNotFoundError: the weights are not on this machine (the message names the folder to put
            them in and the ``huggingface-cli download`` command). ValueError: a file or folder that is
            not a wav2vec2/HuBERT encoder, a wrong ``kind``, missing/unexpected tensors (named).
    """
    if str(source) == MEL_ENCODER_NAME:
        return MelEncoder(dtype=dtype, device=device)
    if kind is not None and kind not in ENCODER_KINDS:
        raise ValueError(f"load_audio_encoder: kind must be one of {ENCODER_KINDS} or None, got {kind!r} "
                         "(the mel front end is source='mel-80')")
    source = str(source)
    path, name = Path(source).expanduser(), source
    if not path.exists() and models_dir is not None and (Path(models_dir) / source).exists():
        path = Path(models_dir) / source
        root = Path(models_dir).resolve()
        if not path.resolve().is_relative_to(root):
            raise ValueError(f"load_audio_encoder: '{source}' resolves outside models_dir ({root}); give a name "
                             "inside it or an absolute path")
    if path.exists():
        name = path.name
    elif _HUB_ID.fullmatch(source) and ".." not in source:
        folder = Path(models_dir) / source.split("/")[1] if models_dir is not None else None
        if folder is not None and folder.is_dir():
            path = folder
        elif (cached := _cached_snapshot(source, cache_dir)) is not None:
            path = cached
        elif not local_files_only:
            if models_dir is None:
                raise ValueError(f"load_audio_encoder: pass models_dir to download '{source}' into")
            path = download_audio_encoder(source, models_dir)
        else:
            target = folder if folder is not None else Path("<models_dir>") / source.split("/")[1]
            looked = f"{folder} and " if folder is not None else ""
            raise FileNotFoundError(
                f"load_audio_encoder: the weights of '{source}' are not on this machine (looked in {looked}"
                f"the Hugging Face cache {cache_dir or 'at its default place'}). Download them with\n"
                f"    huggingface-cli download {source} --local-dir {target}\n"
                "(or call download_audio_encoder / pass local_files_only=False), or copy a folder with "
                f"config.json, preprocessor_config.json and model.safetensors (or pytorch_model.bin) to "
                f"{target}")
    else:
        inside = f" (also not inside {models_dir})" if models_dir is not None else ""
        raise FileNotFoundError(f"load_audio_encoder: '{source}' is not a file or folder{inside} and not a "
                                f"hub id like 'facebook/wav2vec2-base-960h'; known encoders: "
                                f"{', '.join(KNOWN_AUDIO_ENCODERS)}")
    encoder = _load_folder(path, kind, name) if path.is_dir() else _load_file(path, kind, num_attention_heads)
    logger.info("loaded %r from %s", encoder, path)
    return encoder.to(device=device, dtype=dtype)


def download_audio_encoder(repo_id: str, models_dir: str | Path, *, progress: Progress | None = None) -> Path:
    """Download a wav2vec2/HuBERT model from the Hugging Face hub into ``models_dir/<repo name>`` -- the
    only function here that uses the network. Fetches config.json, preprocessor_config.json and
    model.safetensors (pytorch_model.bin only when the repository has no safetensors).

    Args:
        repo_id: "owner/name", e.g. "facebook/wav2vec2-base-960h".
        models_dir: destination parent folder (ComfyUI: models/audio_encoders).
        progress: progress(done_steps, 2); may raise to stop before the next step.

    Returns:
        The model folder, loadable with :func:`load_audio_encoder`.
    """
    if not isinstance(repo_id, str) or not _HUB_ID.fullmatch(repo_id) or ".." in repo_id:
        raise ValueError(f"download_audio_encoder: {repo_id!r} is not a Hugging Face model id like "
                         "'facebook/wav2vec2-base-960h'")
    from huggingface_hub import snapshot_download

    target = Path(models_dir) / repo_id.split("/")[1]

    def fetch(patterns):
        try:
            snapshot_download(repo_id, local_dir=str(target), allow_patterns=patterns)
        except Exception as error:  # offline, no network, unknown repository, authentication
            raise RuntimeError(
                f"download_audio_encoder: could not download '{repo_id}' into '{target}' "
                f"({type(error).__name__}: {error}). Without internet here, run `huggingface-cli download "
                f"{repo_id} --local-dir {target}` on a machine that has it and copy the folder to "
                f"'{target}'") from error

    _report(progress, 0, 2)
    fetch(["config.json", "preprocessor_config.json", "model.safetensors"])
    _report(progress, 1, 2)
    if not (target / "model.safetensors").is_file():
        fetch(["pytorch_model.bin"])
    if not any((target / weights).is_file() for weights in WEIGHT_FILES):
        raise RuntimeError(f"download_audio_encoder: '{repo_id}' has no model.safetensors or "
                           "pytorch_model.bin")
    _report(progress, 2, 2)
    return target
