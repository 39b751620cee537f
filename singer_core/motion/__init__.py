"""FD2Talk motion stage: motion DiTs with the alignment mask (``dit``), the noise schedule and windowed DDIM
sampler (``sampling``), the 3D lip expert (``lip_expert``) and the exp + pose generator (``generator``).
Import the submodules explicitly; importing this package does no work."""
