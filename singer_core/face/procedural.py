"""The built-in procedural 3D morphable head (SynthSinger's face): a deterministic mesh with eyes,
brows, nose, lips, jaw, neck and hair, identity/expression/texture bases in the Deep3DFaceRecon layout
(80/64/80) and iBUG 68-point landmark vertices.

Construction
------------
* **Surface.** Horizontal cross-sections (rows at heights y) of a head whose front half is a
  superellipse (flat face) and whose back half is an ellipse; below a U-shaped jaw line the
  surface blends into a neck cylinder. Columns are spaced evenly in x across the face. Facial relief
  (nose, eye sockets, brow ridge, cheekbones, lips, chin) is a depth offset on the front.
* **Mouth.** Six extra rows sit on top of each other on the lip line: upper-lip edge, two teeth rows,
  two mouth-interior rows, lower-lip edge. Closed, their triangles have no area; ``jaw_open`` moves them by
  different fractions of the jaw motion, so the gap between the lips opens onto upper teeth and a
  dark, recessed interior, shaped like an ellipse across the mouth width.
* **Eyes.** ``blink`` collapses every vertex inside the eye opening onto the lower lid and pulls the
  upper-lid skin down over it (a linear field, as every basis is).
* **Bases.** Expression units 0-5 (``EXPRESSION_UNITS``: jaw_open, lip_round, lip_spread, smile,
  brow_raise, blink) are hand-made fields sized so that 1.0 is a full natural action; 6-63 are small
  random smooth fields. Identity 0-14 and texture 0-7 are named variations (see ``ID_UNITS`` and
  ``TEX_UNITS``), the rest random smooth fields; coefficients ~N(0, 1) give plausible people. The
  mean face and named units do not depend on the seed; the random fields do.

The model frame is x right, y up, z towards the camera (Deep3DFaceRecon's). The head is built
life-size in decimetres, then centred on the middle of the head (chin to crown) and scaled by
``HEAD_SCALE`` (0.7), so that the default camera (focal 1015 at 224 px, distance 10) at angle 0 and
trans 0 frames the whole head, hair and chin included, over the middle ~70 % of the frame height with a
short piece of neck below, leaving room for nods and sway (a Deep3DFaceRecon crop is tighter: it cuts the
hair).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch

from .morphable import EXPRESSION_UNITS, MorphableModel

logger = logging.getLogger(__name__)

# ---- feature placement (model units; x is |x| for paired features)
EYE_X, EYE_Y, EYE_HALF_W = 0.31, 0.20, 0.135  # eye centre and half width
LID_UP, LID_LOW = 0.052, 0.040  # opening above / below the eye centre line
IRIS_R, PUPIL_R = 0.047, 0.018
BROW_INNER, BROW_OUTER, BROW_Y = 0.11, 0.50, 0.385  # brow x extent, centre height at the inner end
NOSE_TIP_Y = -0.10
MOUTH_Y, MOUTH_HALF_W = -0.43, 0.235  # lip line and half width (corners)
UPPER_LIP_H, LOWER_LIP_H = 0.052, 0.068
HAIRLINE_Y = 0.77  # hairline above the forehead centre
SPACING = 0.028  # vertex spacing (build units) at detail 1, halved over the eyes and the mouth:
FEATURE_SPACING = 0.5  # ... there, vertices are SPACING * FEATURE_SPACING apart
JAW_PIVOT = (0.02, -0.2)  # (y, z) of the jaw's rotation axis (parallel to x)
JAW_ANGLE = 0.26  # radians of jaw rotation at jaw_open = 1 (lower lip drops ~0.27)
# framing: the head is built life-size (all constants above are in these build units, decimetres), then
# moved so that HEAD_CENTRE (half-way between the chin at y -0.86 and the crown at y 1.33, and between the
# nose tip and the back of the head in z) is the origin, and scaled by HEAD_SCALE: under the default camera
# (focal 1015 at 224 px, distance 10) angle 0 / trans 0 then shows the whole head, hair and chin included,
# centred, over the middle ~70 % of the frame height (~50 % of its width), with a short piece of neck
HEAD_CENTRE = (0.0, 0.235, -0.10)
HEAD_SCALE = 0.7
# mouth rows, top to bottom, all on the lip line at rest: (name, fraction of the jaw motion, recess)
BAND_ROWS = (("upper_lip", 0.0, 0.0), ("teeth_top", 0.01, 0.25), ("teeth_bottom", 0.12, 0.35),
             ("mouth_top", 0.15, 1.0), ("mouth_bottom", 0.93, 1.0), ("lower_lip", 1.0, 0.0))

ID_UNITS = ("head_width", "face_length", "face_depth", "nose_size", "nose_width", "eye_spacing",
            "mouth_width", "lip_fullness", "jaw_width", "chin", "brow_height", "cheek_fullness",
            "forehead_slope", "eye_size", "nose_bridge")  # identity coefficients 0..14
TEX_UNITS = ("skin_lightness", "skin_redness", "skin_yellowness", "hair_colour", "lip_colour", "iris_colour",
             "brow_darkness", "cheek_blush")  # texture coefficients 0..7

SKIN = np.array([0.86, 0.65, 0.54])
HAIR = np.array([0.17, 0.11, 0.07])
BROW = np.array([0.24, 0.16, 0.11])
LIPS = np.array([0.74, 0.36, 0.36])
SCLERA = np.array([0.93, 0.91, 0.88])
IRIS = np.array([0.36, 0.24, 0.14])
PUPIL = np.array([0.03, 0.02, 0.02])
LASH = np.array([0.12, 0.08, 0.06])
TEETH = np.array([0.94, 0.91, 0.83])
MOUTH = np.array([0.22, 0.05, 0.06])
NOSTRIL = np.array([0.32, 0.16, 0.13])


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gauss(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * ((x - cx) / sx) ** 2 - 0.5 * ((y - cy) / sy) ** 2)


def _band(value, lo, hi, soft):
    """1 inside [lo, hi] with soft edges of width `soft`."""
    return _smoothstep((value - lo) / soft + 0.5) * _smoothstep((hi - value) / soft + 0.5)


# ----------------------------------------------------------------------------- surface


def _profile(y):
    """Head cross-section at heights y: half width a, front depth zf, back depth zb, front exponent n."""
    ys = [-1.80, -1.00, -0.90, -0.80, -0.60, -0.40, -0.20, 0.00, 0.25, 0.50, 0.75, 0.95, 1.10, 1.22, 1.30,
          1.34]
    a = [0.60, 0.60, 0.60, 0.61, 0.64, 0.67, 0.70, 0.73, 0.75, 0.76, 0.74, 0.67, 0.54, 0.38, 0.20, 0.04]
    zf = [0.80, 0.80, 0.79, 0.79, 0.80, 0.82, 0.84, 0.85, 0.85, 0.84, 0.79, 0.67, 0.50, 0.33, 0.16, 0.03]
    zb = [-0.95, -0.95, -0.96, -0.98, -1.00, -1.02, -1.04, -1.05, -1.06, -1.05, -1.00, -0.88, -0.70, -0.48,
          -0.25, -0.05]
    n = [2.6] * len(ys)
    return np.interp(y, ys, a), np.interp(y, ys, zf), np.interp(y, ys, zb), np.interp(y, ys, n)


def _jaw_line(x):
    """Height of the jaw line (below it the surface turns into the neck)."""
    return -0.84 + 0.30 * (np.minimum(np.abs(x), 0.75) / 0.55) ** 2


def _relief(x, y):
    """Depth offset of the facial features on the front (x, y: base frontal coordinates)."""
    ax = np.abs(x)
    nose_h = np.interp(y, [-0.24, -0.19, -0.16, -0.12, -0.08, 0.0, 0.12, 0.25, 0.33, 0.42],
                       [0.0, 0.05, 0.17, 0.26, 0.26, 0.19, 0.11, 0.07, 0.04, 0.0])
    nose_w = np.interp(y, [-0.20, -0.10, 0.05, 0.30], [0.075, 0.062, 0.045, 0.042])
    z = nose_h * np.exp(-0.5 * (x / nose_w) ** 2)
    z += 0.065 * _gauss(ax, y, 0.085, -0.155, 0.035, 0.032)  # alae
    z -= 0.075 * _gauss(ax, y, EYE_X, EYE_Y + 0.01, 0.12, 0.085)  # eye sockets
    z += 0.035 * _gauss(ax, y, EYE_X, EYE_Y, 0.065, 0.045)  # eyeballs
    z += 0.045 * _gauss(ax, y, 0.27, 0.37, 0.17, 0.045)  # brow ridge
    z += 0.030 * _gauss(x, y, 0.0, 0.60, 0.35, 0.20)  # forehead
    z += 0.050 * _gauss(ax, y, 0.40, 0.00, 0.12, 0.09)  # cheekbones
    z -= 0.025 * _gauss(ax, y, 0.46, -0.36, 0.10, 0.12)  # cheek hollows
    z += 0.060 * _gauss(x, y, 0.0, MOUTH_Y + 0.02, 0.22, 0.15)  # muzzle
    z += 0.035 * _gauss(x, y, 0.0, MOUTH_Y + 0.028, 0.16, 0.028)  # upper lip
    z += 0.042 * _gauss(x, y, 0.0, MOUTH_Y - 0.040, 0.15, 0.034)  # lower lip
    z -= 0.012 * _gauss(x, y, 0.0, MOUTH_Y + 0.10, 0.022, 0.04)  # philtrum
    z -= 0.028 * _gauss(x, y, 0.0, MOUTH_Y - 0.13, 0.12, 0.035)  # mentolabial sulcus
    z += 0.055 * _gauss(x, y, 0.0, -0.745, 0.13, 0.07)  # chin
    z -= 0.030 * _gauss(ax, y, 0.62, 0.35, 0.08, 0.12)  # temples
    return z


def _eye_lids(ax):
    """Upper and lower lid heights and the in-eye mask over x (|x|)."""
    t = (ax - EYE_X) / EYE_HALF_W
    shape = np.clip(1.0 - t * t, 0.0, None) ** 0.7
    # the upper lid peaks a little towards the nose
    up = EYE_Y + LID_UP * shape * (1.0 - 0.12 * t)
    low = EYE_Y - LID_LOW * shape
    return up, low, np.abs(t) < 1.0


def _lip_heights(x):
    t = np.clip(np.abs(x) / MOUTH_HALF_W, 0.0, 1.0)
    bow = (1.0 - 0.22 * np.exp(-0.5 * (x / 0.025) ** 2)
           + 0.12 * np.exp(-0.5 * ((np.abs(x) - 0.06) / 0.03) ** 2))  # cupid's bow
    upper = UPPER_LIP_H * (1.0 - t * t) ** 0.6 * bow
    lower = LOWER_LIP_H * (1.0 - t * t) ** 0.5
    return upper, lower


class _Grid:
    """Rows, columns, base positions and per-vertex descriptors of the head mesh."""

    def __init__(self, detail: int):
        h = SPACING / detail
        # 1. rows, evenly spaced in arc length along the front profile, twice as dense across the eyes
        #    and the mouth; the mouth rows sit on the lip line; a pole closes the crown
        fine_y = np.linspace(-1.80, 1.32, 40001)
        _, zf, _, _ = _profile(fine_y)
        density = 1.0 + (1.0 / FEATURE_SPACING - 1.0) * (_band(fine_y, 0.06, 0.48, 0.06)
                                                       + _band(fine_y, -0.58, -0.28, 0.06))
        density *= np.interp(fine_y, [-1.2, -1.0, 0.95, 1.1], [1.0 / 3.0, 1.0, 1.0, 0.6])  # neck, crown
        step = np.hypot(np.diff(fine_y), np.diff(zf)) * 0.5 * (density[1:] + density[:-1])
        arc = np.concatenate([[0.0], np.cumsum(step)])
        mouth = np.interp(MOUTH_Y, fine_y, arc)
        below = np.arange(mouth - h, arc[0] - 0.5 * h, -h)[::-1]
        above = np.arange(mouth + h, arc[-1], h)
        band = np.full(len(BAND_ROWS), MOUTH_Y)  # coincident at rest: their triangles have no area
        self.rows = np.concatenate([np.interp(below, arc, fine_y), band, np.interp(above, arc, fine_y)])
        self.band_first = len(below)  # row index of the first mouth row
        # 2. columns: front evenly spaced in arc length of the face cross-section (twice as dense over the
        #    eyes and the mouth, |x| < 0.5), back evenly spaced in angle
        fine_s = np.linspace(-1.0, 1.0, 40001)
        ref_a, ref_depth, ref_n = 0.76, 0.95, 2.6
        fine_z = ref_depth * (1.0 - np.abs(fine_s) ** ref_n) ** (1.0 / ref_n)
        features = 1.0 - _smoothstep((np.abs(ref_a * fine_s) - 0.48) / 0.1)
        density = 1.0 + (1.0 / FEATURE_SPACING - 1.0) * features
        step = np.hypot(np.diff(ref_a * fine_s), np.diff(fine_z)) * 0.5 * (density[1:] + density[:-1])
        arc = np.concatenate([[0.0], np.cumsum(step)])
        count_front = 2 * int(round(0.5 * arc[-1] / h)) + 1
        s_front = np.interp(np.linspace(0.0, arc[-1], count_front), arc, fine_s)
        count_back = max(12, int(round(0.9 / h)))  # the back of the head is seldom seen
        psi = np.linspace(0.0, np.pi, count_back + 2)[1:-1]
        self.front_cols = count_front
        self.cols = count_front + count_back
        rows, cols = len(self.rows), self.cols
        y = np.repeat(self.rows, cols)
        a, zf, zb, n = _profile(y)
        zc = -0.10
        s = np.tile(np.concatenate([s_front, np.cos(psi)]), rows)
        is_front = np.tile(np.concatenate([np.ones(count_front, bool), np.zeros(count_back, bool)]), rows)
        sin_back = np.tile(np.concatenate([np.zeros(count_front), np.sin(psi)]), rows)
        depth_front = (1.0 - np.abs(s) ** n) ** (1.0 / n)
        x = a * s
        z = np.where(is_front, zc + (zf - zc) * depth_front, zc - (zc - zb) * sin_back)
        # "around" coordinate: 0 front centre, 1 sides, 2 back centre
        around = np.where(is_front, np.abs(s), 2.0 - np.abs(s))
        # 3. neck below the jaw line
        neck_t = _smoothstep((_jaw_line(x) - y) / 0.10)
        neck_r, neck_zc, neck_rz = 0.40, -0.15, 0.42
        neck_x = neck_r * s
        neck_z = np.where(is_front, neck_zc + neck_rz * np.sqrt(np.clip(1 - s * s, 0, 1)),
                          neck_zc - neck_rz * sin_back)
        self.front = np.where(is_front, depth_front, 0.0) * (1.0 - neck_t)  # weight of facial features
        self.base_x, self.y = x, y
        relief = _relief(x, y) * self.front
        self.x = (1.0 - neck_t) * x + neck_t * neck_x
        self.z = (1.0 - neck_t) * z + neck_t * neck_z + relief
        self.neck = neck_t
        self.around = around
        self.is_front = is_front
        # mouth rows
        row_of_vertex = np.repeat(np.arange(rows), cols)
        band_index = len(BAND_ROWS) - 1 - (row_of_vertex - self.band_first)  # stored bottom row first
        self.band_index = np.where((band_index >= 0) & (band_index < len(BAND_ROWS)), band_index, -1)
        self.below_band = row_of_vertex < self.band_first
        self.above_band = row_of_vertex >= self.band_first + len(BAND_ROWS)
        # 4. triangles: quads between consecutive rows (columns wrap around), a fan to the crown pole
        r = np.arange(rows - 1)[:, None]
        c = np.arange(cols)[None, :]
        c1 = (c + 1) % cols
        v00, v01 = r * cols + c, r * cols + c1
        v10, v11 = (r + 1) * cols + c, (r + 1) * cols + c1
        quads = np.stack([np.stack([v00, v01, v11], -1), np.stack([v00, v11, v10], -1)], axis=2)
        quads = quads.reshape(-1, 3)
        self.pole = rows * cols
        top = (rows - 1) * cols
        ring = np.arange(cols)
        fan = np.stack([top + ring, top + (ring + 1) % cols, np.full(cols, self.pole)], -1)
        self.triangles = np.concatenate([quads, fan]).astype(np.int64)
        self.count = rows * cols + 1

    def positions(self) -> np.ndarray:
        """(V, 3) neutral positions (the pole last)."""
        pole = np.array([[0.0, self.rows[-1] + 0.012, -0.10]])
        return np.concatenate([np.stack([self.x, self.y, self.z], -1), pole])

    def pad(self, values: np.ndarray, fill=0.0) -> np.ndarray:
        """Append the pole's value to a per-grid-vertex array."""
        pole = np.full((1,) + values.shape[1:], fill, dtype=values.dtype)
        return np.concatenate([values, pole])


# ----------------------------------------------------------------------------- albedo


def _masks(grid: _Grid) -> dict[str, np.ndarray]:
    """Soft per-vertex region masks in 0..1 (mouth rows resolved)."""
    x, y, front = grid.base_x, grid.y, grid.front
    ax = np.abs(x)
    on_face = (front > 0.05).astype(float)
    masks = {}
    hair_y = np.interp(grid.around, [0.0, 0.45, 0.75, 0.92, 1.0, 1.25, 2.0],
                       [HAIRLINE_Y, HAIRLINE_Y - 0.04, 0.56, 0.38, 0.30, -0.25, -0.50])
    hair_y = hair_y - 0.04 * np.cos(9.0 * x) * (grid.around < 0.6)  # a slightly wavy hairline
    masks["hair"] = _smoothstep((y - hair_y) / 0.035 + 0.5) * (1.0 - grid.neck)
    brow_t = np.clip((ax - BROW_INNER) / (BROW_OUTER - BROW_INNER), 0.0, 1.0)
    brow_y = BROW_Y + 0.05 * np.sin(np.pi * (0.15 + 0.75 * brow_t)) - 0.02 * brow_t
    brow_half = 0.028 - 0.014 * brow_t
    masks["brow"] = (_band(y, brow_y - brow_half, brow_y + brow_half, 0.012)
                     * _band(ax, BROW_INNER, BROW_OUTER, 0.03) * on_face)
    up, low, in_eye = _eye_lids(ax)
    # hard zero outside the opening, so nothing white stays visible when the lids close
    opening = _band(y, low + 0.012, up - 0.004, 0.008) * in_eye * on_face * (y >= low) * (y <= up)
    radius = np.hypot(ax - EYE_X, y - EYE_Y)
    masks["iris"] = opening * _smoothstep((IRIS_R - radius) / 0.01 + 0.5)
    masks["pupil"] = opening * _smoothstep((PUPIL_R - radius) / 0.008 + 0.5)
    masks["sclera"] = opening - masks["iris"]
    lash = (_band(y, up, up + 0.014, 0.008)
            * _band(ax, EYE_X - 1.08 * EYE_HALF_W, EYE_X + 1.12 * EYE_HALF_W, 0.02))
    masks["lash"] = lash * on_face * (1.0 - opening)
    masks["lower_lid"] = _band(y, low - 0.010, low + 0.010, 0.008) * in_eye * on_face * (1.0 - opening)
    masks["socket"] = _gauss(ax, y, EYE_X, EYE_Y + 0.02, 0.13, 0.08) * on_face
    upper_h, lower_h = _lip_heights(x)
    inside = ax < MOUTH_HALF_W
    lips = np.where(y >= MOUTH_Y, _band(y, MOUTH_Y - 0.01, MOUTH_Y + upper_h, 0.010),
                    _band(y, MOUTH_Y - lower_h, MOUTH_Y + 0.01, 0.012))
    masks["lips"] = lips * inside * on_face * _smoothstep((MOUTH_HALF_W - ax) / 0.02 + 0.3)
    masks["lip_line"] = masks["lips"] * np.exp(-0.5 * ((y - MOUTH_Y) / 0.006) ** 2)
    masks["nostril"] = np.exp(-0.5 * (((ax - 0.05) / 0.024) ** 2 + ((y + 0.18) / 0.012) ** 2)) * on_face
    masks["blush"] = _gauss(ax, y, 0.38, -0.10, 0.10, 0.08) * on_face
    # mouth rows inside the mouth: teeth and interior instead of lips/skin
    interior = np.zeros_like(y)
    teeth = np.zeros_like(y)
    for index, (name, _, _) in enumerate(BAND_ROWS):
        here = (grid.band_index == index) & inside
        if name.startswith("teeth"):
            teeth[here] = 1.0
        elif name.startswith("mouth"):
            interior[here] = 1.0
    masks["teeth"], masks["interior"] = teeth, interior
    return masks


def _mean_albedo(grid: _Grid, masks) -> np.ndarray:
    y = grid.y
    colour = np.broadcast_to(SKIN, (y.size, 3)).copy()
    colour *= (1.0 - 0.08 * grid.neck)[:, None]  # neck slightly darker
    colour *= (1.0 - 0.18 * masks["socket"])[:, None]  # eye shadows
    colour += 0.05 * masks["blush"][:, None] * np.array([1.0, -0.2, -0.2])

    def paint(mask, rgb):
        nonlocal colour
        colour = colour * (1.0 - mask[:, None]) + mask[:, None] * rgb

    paint(masks["lips"], LIPS)
    paint(0.6 * masks["lip_line"], LIPS * 0.55)
    paint(masks["nostril"], NOSTRIL)
    paint(masks["brow"], BROW)
    paint(masks["lash"], LASH)
    paint(masks["lower_lid"], SKIN * 0.8)
    paint(masks["sclera"], SCLERA)
    paint(masks["iris"], IRIS)
    paint(masks["pupil"], PUPIL)
    paint(masks["hair"], HAIR)
    paint(masks["teeth"], TEETH)
    paint(masks["interior"], MOUTH)
    return colour


# ----------------------------------------------------------------------------- expression units


def _mouth_weights(grid: _Grid):
    """(gap profile m(x) in 0..1 across the mouth, lowerness 0 above / 1 below the lip line with the
    mouth rows' fractions in between, recess of the mouth rows)."""
    ax = np.abs(grid.base_x)
    gap = np.sqrt(np.clip(1.0 - (ax / MOUTH_HALF_W) ** 2, 0.0, 1.0))
    lower = np.where(grid.below_band, 1.0, 0.0)
    recess = np.zeros_like(lower)
    for index, (_, fraction, depth) in enumerate(BAND_ROWS):
        here = grid.band_index == index
        lower[here] = fraction
        recess[here] = depth
    return gap, lower, recess


def _expression_units(grid: _Grid) -> dict[str, np.ndarray]:
    """The named expression fields, each (N, 3) for the grid vertices."""
    x, y, z, front = grid.base_x, grid.y, grid.z, grid.front
    ax = np.abs(x)
    zeros = np.zeros_like(y)
    gap, lower, recess = _mouth_weights(grid)
    near_mouth = _gauss(x, y, 0.0, MOUTH_Y, 0.32, 0.12) * front
    lips_zone = np.exp(-0.5 * ((y - MOUTH_Y) / 0.085) ** 2) * front

    def opening(down, up, profile):
        """Vertical lip separation: lower lip down by `down`, upper up by `up`, across `profile`."""
        return (-down * lower + up * (1.0 - lower)) * profile * lips_zone

    units = {}
    # jaw_open: rotate the lower face about the jaw axis; the mouth rows split the gap
    smooth_lower = _smoothstep((MOUTH_Y + 0.08 - y) / 0.16)
    weight = (gap * lower + (1.0 - gap) * smooth_lower) * (1.0 - grid.neck)
    weight *= np.where(grid.is_front, 1.0, np.exp(-(((grid.around - 1.0) / 0.2) ** 2)))  # fades behind ears
    pivot_y, pivot_z = JAW_PIVOT
    jaw = np.stack([-0.12 * x * near_mouth, -(z - pivot_z) * JAW_ANGLE * weight,
                    (y - pivot_y) * JAW_ANGLE * weight], -1)
    jaw[:, 2] -= 0.12 * recess * np.sqrt(gap)
    units["jaw_open"] = jaw
    # lip_round: pucker (corners in, lips forward) with a small round opening
    round_profile = np.sqrt(np.clip(1.0 - (ax / (0.6 * MOUTH_HALF_W)) ** 2, 0.0, 1.0))
    units["lip_round"] = np.stack([
        -0.32 * x * near_mouth,
        opening(0.045, 0.015, round_profile),
        0.07 * _gauss(x, y, 0.0, MOUTH_Y, 0.20, 0.08) * front - 0.06 * recess * round_profile,
    ], -1)
    # lip_spread: corners out and back, lips slightly apart
    units["lip_spread"] = np.stack([
        0.24 * x * near_mouth,
        opening(0.022, 0.010, gap),
        -0.035 * near_mouth * np.clip(ax / MOUTH_HALF_W, 0, 1.3) ** 2 - 0.04 * recess * gap,
    ], -1)
    # smile: corners up and out, cheeks up, a little open, lower lids raised
    corners = np.clip(ax / MOUTH_HALF_W, 0.0, 1.25) ** 2
    cheeks = _gauss(ax, y, 0.36, -0.12, 0.12, 0.12) * front
    units["smile"] = np.stack([
        0.09 * x * near_mouth,
        0.085 * corners * near_mouth + 0.035 * cheeks + opening(0.014, 0.010, gap)
        + 0.012 * _gauss(ax, y, EYE_X, EYE_Y - 0.06, 0.10, 0.03) * front,
        0.035 * cheeks - 0.03 * recess * gap,
    ], -1)
    # brow_raise: brows and forehead up, the skin above the lids stretches
    ramp = _smoothstep((y - (EYE_Y + 0.065)) / (BROW_Y - EYE_Y - 0.065))
    above = np.exp(-(np.clip(y - BROW_Y - 0.03, 0.0, None) / 0.35) ** 2)
    lateral = 1.0 - _smoothstep((ax - 0.55) / 0.15)
    lift = ramp * above * front
    units["brow_raise"] = np.stack([zeros, 0.075 * lift * lateral, 0.01 * lift], -1)
    # blink: the eye opening collapses onto the lower lid, the upper lid skin covers it
    up, low, in_eye = _eye_lids(ax)
    inside = (y >= low) & (y <= up) & in_eye
    lid = (y > up) & in_eye
    dy = np.where(inside, -(y - low), 0.0)
    dy = np.where(lid, -(up - low) * (1.0 - _smoothstep((y - up) / 0.07)), dy)
    units["blink"] = np.stack([zeros, dy * (grid.front > 0.3), zeros], -1)
    return units


def _random_fields(grid: _Grid, rng: np.random.Generator, count: int, amplitude: float,
                   decay: float) -> list[np.ndarray]:
    """Smooth random displacement fields on the face: pairs of Gaussian bumps, mostly symmetric."""
    x, y, front = grid.base_x, grid.y, grid.front
    fields = []
    for k in range(count):
        field = np.zeros((y.size, 3))
        for _ in range(2):
            cx, cy = rng.uniform(0.0, 0.55), rng.uniform(-0.85, 0.75)
            sx, sy = rng.uniform(0.08, 0.25), rng.uniform(0.08, 0.25)
            direction = rng.normal(size=3) * np.array([0.6, 1.0, 1.0])
            direction /= np.linalg.norm(direction)
            symmetric = rng.uniform() < 0.75
            right = _gauss(x, y, cx, cy, sx, sy)
            left = _gauss(x, y, -cx, cy, sx, sy)
            mirrored = direction * np.array([-1.0, 1.0, 1.0])
            if symmetric:
                field += right[:, None] * direction + left[:, None] * mirrored
            else:
                field += right[:, None] * direction
        fields.append(amplitude * decay**k * field * front[:, None])
    return fields


def _identity_units(grid: _Grid) -> list[np.ndarray]:
    x, y, z, front = grid.base_x, grid.y, grid.z, grid.front
    ax, sign = np.abs(x), np.sign(x)
    zeros = np.zeros_like(y)
    head = 1.0 - grid.neck

    def vec(dx=zeros, dy=zeros, dz=zeros):
        return np.stack([dx + zeros, dy + zeros, dz + zeros], -1)

    nose = np.interp(y, [-0.24, -0.12, 0.0, 0.3, 0.42], [0.0, 1.0, 0.8, 0.3, 0.0])
    nose = nose * np.exp(-0.5 * (x / 0.07) ** 2)
    return [
        vec(dx=0.05 * x / 0.75 * head),  # head_width
        vec(dy=-0.05 * np.clip((0.2 - y) / 1.0, 0.0, 1.1)),  # face_length
        vec(dz=0.04 * front * (z + 0.1) / 0.95),  # face_depth
        vec(dz=0.05 * nose * front),  # nose_size
        vec(dx=0.25 * x * _gauss(x, y, 0.0, -0.13, 0.12, 0.08) * front),  # nose_width
        vec(dx=0.025 * sign * _gauss(ax, y, EYE_X, EYE_Y, 0.12, 0.09) * front),  # eye_spacing
        vec(dx=0.12 * x * _gauss(x, y, 0.0, MOUTH_Y, 0.30, 0.10) * front),  # mouth_width
        vec(dy=0.30 * (y - MOUTH_Y) * _gauss(x, y, 0.0, MOUTH_Y, 0.20, 0.07) * front,
            dz=0.02 * _gauss(x, y, 0.0, MOUTH_Y, 0.18, 0.06) * front),  # lip_fullness
        vec(dx=0.06 * x * _smoothstep((-0.2 - y) / 0.4) * head),  # jaw_width
        vec(dy=-0.02 * _gauss(x, y, 0.0, -0.76, 0.15, 0.10) * front,
            dz=0.04 * _gauss(x, y, 0.0, -0.76, 0.15, 0.10) * front),  # chin
        vec(dy=0.025 * _gauss(ax, y, 0.30, BROW_Y, 0.20, 0.08) * front),  # brow_height
        vec(dx=0.03 * sign * _gauss(ax, y, 0.42, -0.2, 0.15, 0.15) * front,
            dz=0.04 * _gauss(ax, y, 0.42, -0.2, 0.15, 0.15) * front),  # cheek_fullness
        vec(dz=-0.05 * front * np.clip((y - 0.4) / 0.6, 0.0, 1.0) ** 2),  # forehead_slope
        vec(dy=0.25 * (y - EYE_Y) * _gauss(ax, y, EYE_X, EYE_Y, 0.10, 0.06) * front),  # eye_size
        vec(dz=0.03 * _gauss(x, y, 0.0, 0.12, 0.05, 0.12) * front),  # nose_bridge
    ]


def _texture_units(grid: _Grid, masks) -> list[np.ndarray]:
    skin = np.clip(1.0 - masks["hair"] - masks["brow"] - masks["sclera"] - masks["iris"] - masks["lips"]
                   - masks["teeth"] - masks["interior"], 0.0, 1.0)[:, None]

    def tint(mask, rgb):
        return (mask if mask.ndim == 2 else mask[:, None]) * np.asarray(rgb)

    return [
        tint(skin, [0.09, 0.085, 0.08]),  # skin_lightness
        tint(skin, [0.03, -0.005, -0.005]),  # skin_redness
        tint(skin, [0.01, 0.012, -0.025]),  # skin_yellowness
        tint(masks["hair"], [0.10, 0.07, 0.03]),  # hair_colour
        tint(masks["lips"], [0.07, -0.03, -0.02]),  # lip_colour
        tint(masks["iris"] - masks["pupil"], [-0.08, 0.02, 0.12]),  # iris_colour
        tint(masks["brow"], [-0.06, -0.05, -0.04]),  # brow_darkness
        tint(masks["blush"], [0.04, -0.01, -0.01]),  # cheek_blush
    ]


def _random_colour_fields(grid: _Grid, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    x, y, front = grid.base_x, grid.y, grid.front
    fields = []
    for k in range(count):
        cx, cy = rng.uniform(-0.6, 0.6), rng.uniform(-0.9, 0.8)
        sx, sy = rng.uniform(0.1, 0.35), rng.uniform(0.1, 0.35)
        # lightness and warmth only (skin-like variations; no grey or green casts)
        rgb = np.array([1.0, 0.92, 0.85]) + 0.25 * rng.normal() * np.array([0.6, 0.1, -0.5])
        rgb = rng.choice([-1.0, 1.0]) * rgb / np.linalg.norm(rgb)
        bump = _gauss(x, y, cx, cy, sx, sy) + _gauss(x, y, -cx, cy, sx, sy) * (rng.uniform() < 0.7)
        fields.append(0.012 * 0.985**k * (bump * (0.3 + 0.7 * front))[:, None] * rgb)
    return fields


# ----------------------------------------------------------------------------- landmarks


def _landmarks(grid: _Grid, positions: np.ndarray) -> np.ndarray:
    """Vertex ids of the iBUG 68 points, picked on the neutral mean face."""
    px, py = positions[:-1, 0], positions[:-1, 1]
    front = grid.front > 0.25
    regular = front & (grid.band_index < 0)
    row = grid.band_index

    def nearest(tx, ty, allowed):
        candidates = np.flatnonzero(allowed)
        distance = (px[candidates] - tx) ** 2 + (py[candidates] - ty) ** 2
        return int(candidates[np.argmin(distance)])

    points = []
    # jaw 0-16 along the face outline, from the image left (subject's right) over the chin
    for k in range(17):
        gamma = np.pi * k / 16.0
        tx = -0.70 * np.cos(gamma)
        ty = 0.18 - 1.00 * np.sin(gamma) ** 1.15
        points.append(nearest(tx, ty, regular & (grid.neck < 0.5)))
    # brows 17-26 (image left brow outer -> inner, then image right brow inner -> outer)
    brow_xs = [-0.49, -0.41, -0.32, -0.23, -0.14, 0.14, 0.23, 0.32, 0.41, 0.49]
    for tx in brow_xs:
        t = np.clip((abs(tx) - BROW_INNER) / (BROW_OUTER - BROW_INNER), 0.0, 1.0)
        ty = BROW_Y + 0.05 * np.sin(np.pi * (0.15 + 0.75 * t)) - 0.02 * t + 0.008
        points.append(nearest(tx, ty, regular))
    # nose 27-35
    for ty in (EYE_Y - 0.01, 0.09, 0.0, NOSE_TIP_Y):
        points.append(nearest(0.0, ty, regular))
    for tx, ty in ((-0.09, -0.168), (-0.045, -0.182), (0.0, -0.19), (0.045, -0.182), (0.09, -0.168)):
        points.append(nearest(tx, ty, regular))
    # eyes 36-47: upper/lower lid points are inside the opening so a blink closes them exactly
    ax_all = np.abs(grid.base_x)
    up_all, low_all, in_eye = _eye_lids(ax_all)
    opening = regular & in_eye & (grid.y >= low_all) & (grid.y <= up_all)
    third = EYE_HALF_W / 3.0
    for centre, order in ((-EYE_X, ("outer", "up_o", "up_i", "inner", "low_i", "low_o")),
                          (EYE_X, ("inner", "up_i", "up_o", "outer", "low_o", "low_i"))):
        outward = np.sign(centre)
        for name in order:
            if name in ("outer", "inner"):
                tx = centre + outward * (0.93 if name == "outer" else -0.93) * EYE_HALF_W
                points.append(nearest(tx, EYE_Y, regular))
                continue
            tx = centre + outward * (third if name.endswith("_o") else -third)
            up, low, _ = _eye_lids(np.array([abs(tx)]))
            ty = (up[0] - 0.004) if name.startswith("up") else (low[0] + 0.004)
            points.append(nearest(tx, ty, opening))
    # mouth 48-67
    width = MOUTH_HALF_W
    upper_rows = front & grid.above_band
    lower_rows = front & grid.below_band
    row_u = front & (row == 0)
    row_l = front & (row == len(BAND_ROWS) - 1)
    upper_h, lower_h = _lip_heights(np.array([0.62 * width, 0.30 * width, 0.0]))
    points.append(nearest(-width, MOUTH_Y, row_u))  # 48
    for tx, hu in ((-0.62 * width, upper_h[0]), (-0.30 * width, upper_h[1]), (0.0, upper_h[2]),
                   (0.30 * width, upper_h[1]), (0.62 * width, upper_h[0])):
        points.append(nearest(tx, MOUTH_Y + hu, upper_rows))  # 49-53
    points.append(nearest(width, MOUTH_Y, row_u))  # 54
    for tx, hl in ((0.62 * width, lower_h[0]), (0.30 * width, lower_h[1]), (0.0, lower_h[2]),
                   (-0.30 * width, lower_h[1]), (-0.62 * width, lower_h[0])):
        points.append(nearest(tx, MOUTH_Y - hl, lower_rows))  # 55-59
    points.append(nearest(-0.92 * width, MOUTH_Y, row_u))  # 60
    for tx in (-0.4 * width, 0.0, 0.4 * width):
        points.append(nearest(tx, MOUTH_Y, row_u))  # 61-63
    points.append(nearest(0.92 * width, MOUTH_Y, row_u))  # 64
    for tx in (0.4 * width, 0.0, -0.4 * width):
        points.append(nearest(tx, MOUTH_Y, row_l))  # 65-67
    return np.asarray(points, dtype=np.int64)


# ----------------------------------------------------------------------------- assembly


@functools.lru_cache(maxsize=4)
def _build_arrays(seed: int, detail: int) -> dict[str, np.ndarray]:
    grid = _Grid(detail)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x3D33])
    # 1. neutral shape: grid positions plus a slight downturn of the mouth corners
    positions = grid.positions()
    corner_drop = -0.012 * np.clip(np.abs(grid.base_x) / MOUTH_HALF_W, 0, 1.3) ** 2 * _gauss(
        grid.base_x, grid.y, 0.0, MOUTH_Y, 0.35, 0.10) * grid.front
    positions[:-1, 1] += corner_drop
    # 2. expression basis: named units, then random fields
    named = _expression_units(grid)
    exp = np.zeros((grid.count, 3, 64))
    for name, index in EXPRESSION_UNITS.items():
        exp[:-1, :, index] = named[name]
    for k, field in enumerate(_random_fields(grid, rng, 64 - len(EXPRESSION_UNITS), 0.012, 0.98)):
        exp[:-1, :, len(EXPRESSION_UNITS) + k] = field
    # 3. identity basis
    ident = np.zeros((grid.count, 3, 80))
    named_id = _identity_units(grid)
    for k, field in enumerate(named_id + _random_fields(grid, rng, 80 - len(named_id), 0.018, 0.975)):
        ident[:-1, :, k] = field
    # 4. albedo and texture basis
    masks = _masks(grid)
    mean_tex = grid.pad(_mean_albedo(grid, masks), fill=HAIR[0])
    mean_tex[-1] = HAIR
    tex = np.zeros((grid.count, 3, 80))
    named_tex = _texture_units(grid, masks)
    for k, field in enumerate(named_tex + _random_colour_fields(grid, rng, 80 - len(named_tex))):
        tex[:-1, :, k] = field
    # 5. landmarks on the neutral face
    landmarks = _landmarks(grid, positions)
    # 6. framing: centre and scale the head (the bases are displacements: scaled only)
    positions = (positions - np.asarray(HEAD_CENTRE)) * HEAD_SCALE
    ident *= HEAD_SCALE
    exp *= HEAD_SCALE
    arrays = {"mean_shape": positions, "id_basis": ident, "exp_basis": exp, "mean_tex": np.clip(mean_tex, 0, 1),
              "tex_basis": tex}
    arrays = {key: value.astype(np.float32) for key, value in arrays.items()}  # the cache holds float32
    return arrays | {"triangles": grid.triangles, "landmarks68": landmarks}


def build_procedural_model(seed: int = 0, detail: int = 1) -> MorphableModel:
    """Build the procedural head (see the module docstring); cached per (seed, detail).

    Args:
        seed: seeds the random identity/expression/texture fields (integer).
        detail: mesh density 1..4: vertices SPACING / detail build units apart (half that over the eyes
            and mouth); at 224 px and detail 1 that is ~2 px (~1 px over the features).

    Returns:
        A float32 CPU MorphableModel named "procedural(seed=S, detail=D)".
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"procedural_model: seed must be an integer, got {seed!r}")
    if isinstance(detail, bool) or not isinstance(detail, (int, np.integer)) or not 1 <= detail <= 4:
        raise ValueError(f"procedural_model: detail must be an integer in [1, 4], got {detail!r}")
    arrays = _build_arrays(int(seed), int(detail))
    tensors = {}
    for key, value in arrays.items():
        tensors[key] = torch.from_numpy(value.copy())  # a copy: callers may modify their tensors
    return MorphableModel(name=f"procedural(seed={int(seed)}, detail={int(detail)})", **tensors)


def procedural_model(seed: int = 0, detail: int = 1) -> MorphableModel:
    """The built-in procedural head (this module): deterministic in `seed`.

    Args:
        seed: seeds the random parts of the identity, expression and texture bases (the mean face and
            the named expression units are the same for every seed).
        detail: mesh density 1..4. At 1 (23k vertices, 46k triangles) vertices are ~1 px apart over
            the eyes and mouth and ~2 px elsewhere in a 224 px render (the head fills ~70 % of the frame
            height): enough up to ~384 px. 2 is twice as dense in each direction (89k vertices), for 768 px.

    Returns:
        A float32 CPU MorphableModel.
    """
    return build_procedural_model(seed=seed, detail=detail)
