"""SINGER datasets: the clip format (``format``), the SynthSinger generator (``synthetic``, driven by
``motion_from_song``), the real-video preprocessor (``preprocess``) and the training Dataset (``dataset``).

Command line: ``python -m singer_core.data synth --out DIR ...`` and ``python -m singer_core.data preprocess
...``. Importing this package does no work; import the submodules explicitly.
"""
