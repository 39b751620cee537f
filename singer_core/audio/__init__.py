"""Audio front end: song synthesis (decode, resample, encoders and separation arrive with the audio issue)."""
