"""Volume renderer of the audio-driven NeRF (DAMC §2.4, C(r) = ∫ T(t) sigma(r(t)) c(r(t), d) dt; NeRF eq. 3):
rays -> box -> stratified samples -> occupancy skipping -> field -> compositing, chunked over rays."""

from __future__ import annotations

import logging

import torch

from ..ops.volume import OccupancyGrid, PinholeCamera, composite, ray_aabb, stratified_samples
from ..progress import Progress

logger = logging.getLogger(__name__)


def render_rays(field, origins: torch.Tensor, directions: torch.Tensor, audio: torch.Tensor, frame_index=None, *,
                num_samples: int = 64, occupancy: OccupancyGrid | None = None, perturb: bool = False,
                generator: torch.Generator | None = None, background: torch.Tensor | float | None = 1.0,
                early_stop: float = 1e-4, eye: torch.Tensor | None = None, min_near: float = 0.05,
                march_group: int | None = 16) -> dict[str, torch.Tensor]:
    """Render a batch of rays (differentiable; use for training and, chunked, for images).

    Args:
        field: AudioConditionedField (or any module with .aabb, .density and .color like it).
        origins, directions: (R, 3) world rays, unit directions.
        audio: (A,) audio feature of the frame; frame_index: int / (R,) long / None (latent code).
        num_samples: S stratified samples per ray inside the field's box.
        occupancy: OccupancyGrid; samples in empty cells are skipped (not evaluated). None = evaluate all.
        perturb: jitter samples inside their bins (training), seeded by `generator`.
        background: colour behind the head ((3,), (R, 3) or scalar; None = black).
        early_stop: transmittance below which samples are dropped (Instant-NGP 1e-4).
        eye: optional eye feature (1,); min_near: nearest sample distance from the camera.
        march_group: samples per ray evaluated per step of early ray termination (None = all in one step).
    Returns:
        dict rgb (R, 3), depth (R,), opacity (R,), weights (R, S), t (R, S), live (R, S) bool (evaluated samples),
        transmittance (R,) after the evaluated samples.
    """
    num_rays = origins.shape[0]
    # 1. ray / box and samples
    near, far, hit = ray_aabb(origins, directions, field.aabb, min_near=min_near)
    t, deltas = stratified_samples(near, far, num_samples, perturb=perturb, generator=generator)
    points = origins[:, None, :] + directions[:, None, :] * t[..., None]          # (R, S, 3)
    # 2. which samples to evaluate: inside the box, and occupied
    live = hit[:, None].expand_as(t)
    if occupancy is not None:
        live = live & occupancy.query(points)
    # 3. field on live samples only, group by group along the rays (early ray termination: a ray whose
    #    transmittance fell below `early_stop` before a group is not evaluated further; those samples would
    #    get weight 0 anyway, so the image is the same as evaluating everything), scattered back into (R, S)
    if frame_index is not None and torch.is_tensor(frame_index) and frame_index.dim() == 1 \
            and frame_index.numel() == num_rays:
        frame_index = frame_index[:, None].expand(num_rays, num_samples)
    group = num_samples if march_group is None else max(1, int(march_group))
    sigmas = points.new_zeros(num_rays, num_samples)
    rgbs = points.new_zeros(num_rays, num_samples, 3)
    evaluated = torch.zeros_like(live)
    optical_depth = points.new_zeros(num_rays)  # sum of sigma * delta so far (for the termination test)
    for start in range(0, num_samples, group):
        stop = min(start + group, num_samples)
        sel = live[:, start:stop]
        if early_stop > 0 and start > 0:
            sel = sel & (torch.exp(-optical_depth) >= early_stop)[:, None]
        if not bool(sel.any()):
            continue
        rows, cols = sel.nonzero(as_tuple=True)
        cols = cols + start
        frames = frame_index[rows, cols] if torch.is_tensor(frame_index) and frame_index.dim() == 2 \
            else frame_index
        sigma, geo = field.density(points[rows, cols], audio, eye)
        color = field.color(directions[rows], geo, frames)
        sigmas = sigmas.index_put((rows, cols), sigma.to(sigmas.dtype))
        rgbs = rgbs.index_put((rows, cols), color.to(rgbs.dtype))
        evaluated[rows, cols] = True
        if stop < num_samples:
            optical_depth = optical_depth + (sigmas[:, start:stop] * deltas[:, start:stop]).detach().sum(dim=1)
    # 4. composite
    out = composite(sigmas, rgbs, deltas, t, mask=evaluated, background=background, early_stop=early_stop)
    out["t"], out["live"] = t, evaluated
    return out


def render(field, camera: PinholeCamera, audio_feature: torch.Tensor, frame_index=None, *,
           image_size: int | tuple[int, int] | None = None, num_samples: int = 64,
           occupancy: OccupancyGrid | None = None, background: torch.Tensor | float | None = 1.0,
           chunk: int = 8192, perturb: bool = False, generator: torch.Generator | None = None,
           early_stop: float = 1e-4, eye: torch.Tensor | None = None, march_group: int | None = 16,
           progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """Render one frame, `chunk` rays at a time to bound memory (call under torch.no_grad() for inference;
    with gradients on, the graph of every chunk is kept).

    Args:
        field: AudioConditionedField; camera: PinholeCamera (OpenGL convention unless it says otherwise).
        audio_feature: (A,) fused audio feature f_a of this frame; frame_index: latent code index or None.
        image_size: output size, int (square) or (H, W); None = the camera's own size (intrinsics rescaled).
        num_samples, occupancy, background, perturb, generator, early_stop, eye, march_group: as in render_rays.
        chunk: rays per field call; progress: called (done_rays, total_rays) after each chunk (may raise).
    Returns:
        dict rgb (H, W, 3), depth (H, W), alpha (H, W) on the field's device.
    """
    if image_size is not None:
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        camera = camera.resized(int(height), int(width))
    if chunk < 1:
        raise ValueError(f"render: chunk={chunk} must be >= 1 rays")
    param = next(field.parameters())
    origins, directions = camera.rays(device=param.device, dtype=param.dtype)
    height, width = origins.shape[:2]
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    total = origins.shape[0]
    audio = audio_feature.to(device=param.device, dtype=param.dtype)
    pieces: dict[str, list[torch.Tensor]] = {"rgb": [], "depth": [], "opacity": []}
    for start in range(0, total, chunk):
        out = render_rays(field, origins[start:start + chunk], directions[start:start + chunk], audio, frame_index,
                          num_samples=num_samples, occupancy=occupancy, perturb=perturb, generator=generator,
                          background=background, early_stop=early_stop, eye=eye, march_group=march_group)
        for key in pieces:
            pieces[key].append(out[key])
        if progress is not None:
            progress(min(start + chunk, total), total)
    return {"rgb": torch.cat(pieces["rgb"]).view(height, width, 3),
            "depth": torch.cat(pieces["depth"]).view(height, width),
            "alpha": torch.cat(pieces["opacity"]).view(height, width)}
