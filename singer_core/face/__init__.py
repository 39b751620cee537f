"""Faces: the 3D morphable model (``morphable``, Deep3DFaceRecon layout; the procedural head in
``procedural``; the Basel Face Model loader in ``bfm``), the mesh renderer (``render``) and the face
tools built on them. Import the submodules explicitly; importing this package does no work."""
