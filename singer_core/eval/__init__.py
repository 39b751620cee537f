"""SINGER evaluation: image / video quality (``image``: PSNR, SSIM, CPBD), motion metrics (``motion``: LMD,
mouth-energy correlation, lip-sync confidence, diversity, Beat Align Score, coefficient errors), Fréchet
distances (``fvd``), everything re-exported by ``metrics``, and the motion-model evaluation
(``evaluate``; command line ``python -m singer_core.eval motion ...``). Importing this package does no work;
import the submodules explicitly."""
