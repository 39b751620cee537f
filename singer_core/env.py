"""`python -m singer_core.env`: the versions of the packages the pack runs on, one per line (for CI logs and
bug reports). A package that is installed but fails to import is reported with the reason."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sys

# distribution name -> module imported to check that it loads
PACKAGES = {
    "torch": "torch", "torchaudio": "torchaudio", "torchvision": "torchvision", "triton": "triton",
    "transformers": "transformers", "diffusers": "diffusers", "huggingface_hub": "huggingface_hub",
    "accelerate": "accelerate", "safetensors": "safetensors", "opencv-python": "cv2", "av": "av",
    "numpy": "numpy", "pillow": "PIL", "scipy": "scipy", "numba": "numba", "onnx": "onnx",
}


def versions() -> dict[str, str]:
    """{distribution: version, or 'not installed', or 'version (fails to load: reason)'}."""
    found = {"python": platform.python_version()}
    for dist, module in PACKAGES.items():
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "not installed"
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any failure to load is what this report is for
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            version = f"{version} (fails to load: {reason[:120]})"
        found[dist] = version
    return found


def main() -> int:
    for name, version in versions().items():
        print(f"{name:16s} {version}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
