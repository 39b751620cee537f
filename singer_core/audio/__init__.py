"""Audio front end: decode/convert (io, decode), frame alignment (frames), encoders (wav2vec2, HuBERT, mel),
per-frame features (features), vocal isolation (separation), song synthesis (synth)."""
