"""SINGER spectral modules: the Multi-scale Spectral Module (msm), the Self-adaptive Filter Module
(sfm) and the sub-band visualisation (visualize). Import the submodules directly; nothing is loaded here."""
