"""Audio-driven NeRF (DAMC §2.2-2.4 on ER-NeRF): the tri-plane radiance field (``field``), its volume
renderer (``renderer``) and the audio side: the Dynamic-Sync Encoder (``dynamic_sync``) and the CSFM fusion
(``csfm``). Import the submodules explicitly; importing this package does no work."""
