"""SINGER spectral modules: sub-band visualisation (MSM and SFM arrive with the diffusion issue)."""
