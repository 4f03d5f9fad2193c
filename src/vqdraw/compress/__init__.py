"""Codes <-> bytes: the .vqd format, compress/decompress, entropy coding, text, JPEG/WebP, rate-distortion."""
