"""CPBD of the pack (``singer_core.eval.image.cpbd``, MATLAB ``edge()`` defaults) against the PyPI ``cpbd``
package (a Python port of Narvekar & Karam's reference, Octave ``edge()`` thresholds, scikit-image Canny).

Images: the first frame of SynthSinger clips (procedural faces on textured backgrounds), turned grey
(BT.601, 0..255), Gaussian-blurred with sigma 0..3 and quantised to 8 bits; both metrics score the very same
grey array. Prints both scores per image, then Pearson r, mean |difference|, Spearman rank correlation, and
the share of same-face pairs (two blur levels of one face) both metrics order the same way (a tie in one
metric agrees only with a tie in the other), and r / mean |difference| again over the images that at least
one metric scores above 0.

``cpbd`` is not a dependency of the pack: install it somewhere and make it importable, e.g.

    python3 -m venv /tmp/cpbd-venv && /tmp/cpbd-venv/bin/pip install cpbd
    PYTHONPATH=$PWD:/tmp/cpbd-venv/lib/python3.11/site-packages python benchmarks/cpbd_vs_pypi.py

Without it the script says so and exits 0. cpbd 1.0.7 still imports ``scipy.ndimage.imread`` (gone since
SciPy 1.2) for its command line only; the script supplies a stand-in that raises, so the package imports on
a current SciPy without changing what ``cpbd.compute`` computes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

import numpy as np

SIGMAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def _import_pypi_cpbd():
    import scipy.ndimage

    if not hasattr(scipy.ndimage, "imread"):
        def imread(*args, **kwargs):
            raise RuntimeError("scipy.ndimage.imread was removed in SciPy 1.2 (stand-in for cpbd's CLI import)")

        scipy.ndimage.imread = imread
    import cpbd

    return cpbd


def _grey_faces(count: int, size: int) -> list[np.ndarray]:
    """``count`` (size, size) float64 grey images in 0..255 (frame 0 of SynthSinger clips 0..count-1)."""
    from singer_core.data.synthetic import SynthSingerConfig, generate_clip

    config = SynthSingerConfig(clips=count, size=size, seconds=0.2, textured_background=True)
    weights = np.array([0.299, 0.587, 0.114])
    return [generate_clip(config, index).frames[0].numpy().astype(np.float64) @ weights for index in range(count)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=5, help="SynthSinger identities (default 5)")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels (default 256)")
    parser.add_argument("--json", help="also write the scores and statistics to this file")
    args = parser.parse_args(argv)
    try:
        pypi = _import_pypi_cpbd()
    except ImportError as error:
        print(f"skipped: the PyPI cpbd package is not importable ({error}); see this script's docstring")
        return 0
    from importlib.metadata import version

    from scipy import ndimage, stats

    from singer_core.eval.image import cpbd as ours

    rows = []
    for face, grey in enumerate(_grey_faces(args.faces, args.size)):
        for sigma in SIGMAS:
            image = np.round(ndimage.gaussian_filter(grey, sigma)) if sigma else np.round(grey)
            rows.append({"face": face, "sigma": sigma, "ours": ours(image, data_range=255.0),
                         "pypi": float(pypi.compute(image))})
            print(f"face {face} sigma {sigma:.2f}: ours {rows[-1]['ours']:.4f}  pypi {rows[-1]['pypi']:.4f}")
    a = np.array([row["ours"] for row in rows])
    b = np.array([row["pypi"] for row in rows])
    agree = total = 0
    for first, second in itertools.combinations(rows, 2):
        if first["face"] == second["face"]:
            total += 1
            agree += np.sign(first["ours"] - second["ours"]) == np.sign(first["pypi"] - second["pypi"])
    summary = {
        "cpbd_version": version("cpbd"), "images": len(rows), "pearson_r": float(stats.pearsonr(a, b)[0]),
        "mean_abs_diff": float(np.abs(a - b).mean()), "max_abs_diff": float(np.abs(a - b).max()),
        "mean_ours": float(a.mean()), "mean_pypi": float(b.mean()),
        "spearman_rho": float(stats.spearmanr(a, b)[0]), "same_face_pair_order_agreement": agree / total,
    }
    scored = (a > 0) | (b > 0)  # heavily blurred copies score 0 in both: without them the agreement is lower
    summary.update({"images_scored_above_0": int(scored.sum()),
                    "pearson_r_scored": float(stats.pearsonr(a[scored], b[scored])[0]),
                    "mean_abs_diff_scored": float(np.abs(a - b)[scored].mean())})
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "summary": summary}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
