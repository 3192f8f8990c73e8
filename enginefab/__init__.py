"""enginefab: reproducible, matrix-planned OCI images for AI training engines."""

__version__ = "0.1.0"
