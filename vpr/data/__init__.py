"""Data sets: reading the real split formats, the index-file contract, and image loading."""
