"""Loader for a user-supplied Basel Face Model in the Deep3DFaceRecon layout (``BFM_model_front.mat``,
made by Deep3DFaceRecon's ``util/load_mats.py`` from BFM 2009 + the Guo et al. expression basis;
github sicxu/Deep3DFaceRecon_pytorch, ``models/bfm.py`` ``ParametricFaceModel``).

The file is a MATLAB v5 .mat read with ``scipy.io.loadmat`` (no pickle). Keys used:

=========== ============ =====================================================================
key         shape        meaning
=========== ============ =====================================================================
meanshape   (1, 3V)      mean shape, decimetres, vertices interleaved x0 y0 z0 x1 ...
idBase      (3V, 80)     identity basis (already scaled by the standard deviations)
exBase      (3V, 64)     expression basis
meantex     (1, 3V)      mean albedo, RGB in 0..255
texBase     (3V, 80)     albedo basis in 0..255 units
tri         (F, 3)       triangles, 1-based vertex ids, counter-clockwise seen from outside
keypoints   (1, 68)      iBUG 68 landmark vertex ids, 1-based
point_buf   (V, 8)       (optional, unused: we compute vertex normals from ``tri``)
=========== ============ =====================================================================

As Deep3DFaceRecon (``recenter=True``), the mean shape is re-centred on its vertex mean; the bases
are not scaled. Albedo and its basis are divided by 255, so ``MorphableModel.albedo`` equals
Deep3DFaceRecon's ``compute_texture(normalize=True)`` (clamped to 0..1).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .morphable import MorphableModel

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "keypoints")
BASIS_SIZES = {"idBase": 80, "exBase": 64, "texBase": 80}


def load_bfm_mat(path, *, recenter: bool = True, dtype: torch.dtype = torch.float32) -> MorphableModel:
    """Load ``BFM_model_front.mat`` (Deep3DFaceRecon layout) as a MorphableModel.

    Args:
        path: the .mat file (MATLAB v5; e.g. Deep3DFaceRecon's ``BFM/BFM_model_front.mat``).
        recenter: subtract the vertex mean from the mean shape (Deep3DFaceRecon's default).
        dtype: floating dtype of the returned tensors.

    Returns:
        MorphableModel named after the file (V vertices, F triangles, 0-based ids).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable v5 .mat, required keys missing, or inconsistent shapes.
    """
    path = Path(path)
    where = f"load_bfm_mat: '{path}'"
    if not path.is_file():
        raise FileNotFoundError(f"{where} does not exist; download the Basel Face Model 2009 and build "
                                f"BFM_model_front.mat as Deep3DFaceRecon describes (BFM/ folder)")
    try:
        from scipy.io import loadmat
    except ImportError as error:
        raise RuntimeError("load_bfm_mat needs scipy to read .mat files: pip install scipy") from error
    try:
        data = loadmat(str(path))
    except NotImplementedError as error:  # MATLAB v7.3 files are HDF5
        raise ValueError(f"{where} is a MATLAB v7.3 (HDF5) file; save it as v5 (scipy.io.savemat or MATLAB "
                         f"save -v7)") from error
    except Exception as error:  # scipy raises ValueError/TypeError/MatReadError on garbage
        raise ValueError(f"{where} is not a readable MATLAB .mat file ({error})") from error
    found = sorted(key for key in data if not key.startswith("__"))
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise ValueError(f"{where} lacks the keys {missing} of Deep3DFaceRecon's BFM_model_front.mat "
                         f"(found {found}); needed: {list(REQUIRED_KEYS)}")

    # 1. shape and albedo means: (1, 3V) or (3V, 1) -> (V, 3)
    mean_shape = np.asarray(data["meanshape"], dtype=np.float64).reshape(-1)
    if mean_shape.size % 3:
        raise ValueError(f"{where}: meanshape has {mean_shape.size} values, not a multiple of 3")
    count = mean_shape.size // 3
    mean_shape = mean_shape.reshape(count, 3)
    if recenter:
        mean_shape = mean_shape - mean_shape.mean(axis=0, keepdims=True)
    mean_tex = np.asarray(data["meantex"], dtype=np.float64).reshape(-1)
    if mean_tex.size != 3 * count:
        raise ValueError(f"{where}: meantex has {mean_tex.size} values, expected 3 x {count} vertices")
    mean_tex = mean_tex.reshape(count, 3) / 255.0

    # 2. bases: (3V, K) -> (V, 3, K), the first K columns of the layout
    bases = {}
    for key, size in BASIS_SIZES.items():
        basis = np.asarray(data[key], dtype=np.float64)
        if basis.ndim != 2 or basis.shape[0] != 3 * count or basis.shape[1] < size:
            raise ValueError(f"{where}: {key} must be shaped (3V = {3 * count}, {size}), got {basis.shape}")
        if basis.shape[1] > size:
            logger.warning("%s: %s has %d columns; using the first %d (Deep3DFaceRecon layout)", where, key,
                           basis.shape[1], size)
        bases[key] = basis[:, :size].reshape(count, 3, size)
    bases["texBase"] = bases["texBase"] / 255.0

    # 3. 1-based index arrays -> 0-based int64
    triangles = np.asarray(data["tri"]).astype(np.int64) - 1
    if triangles.ndim != 2 or triangles.shape[1] != 3:
        raise ValueError(f"{where}: tri must be shaped (F, 3), got {triangles.shape}")
    keypoints = np.asarray(data["keypoints"]).astype(np.int64).reshape(-1) - 1
    if keypoints.size != 68:
        raise ValueError(f"{where}: keypoints must hold 68 vertex ids, got {keypoints.size}")
    for key, ids in (("tri", triangles), ("keypoints", keypoints)):
        if ids.size and (ids.min() < 0 or ids.max() >= count):
            raise ValueError(f"{where}: {key} holds vertex ids outside 1..{count} (1-based as in the .mat)")

    def tensor(array):
        return torch.tensor(array, dtype=dtype)

    model = MorphableModel(
        mean_shape=tensor(mean_shape), id_basis=tensor(bases["idBase"]), exp_basis=tensor(bases["exBase"]),
        mean_tex=tensor(mean_tex), tex_basis=tensor(bases["texBase"]),
        triangles=torch.from_numpy(np.ascontiguousarray(triangles)), landmarks68=torch.from_numpy(keypoints),
        name=path.stem,
    )
    logger.info("load_bfm_mat: %s: %d vertices, %d triangles", path.name, count, len(triangles))
    return model
