"""MovieLens 1M: reading and validating the files, the catalogue, sequences, windows, splits and item features."""
