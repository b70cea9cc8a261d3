"""Data layer: registry of datasets, downloads, raw formats, protocols and the processed dataset."""
