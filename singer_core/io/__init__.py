"""Checkpoints, hub download and muxing (arrive with the pipeline issues)."""
