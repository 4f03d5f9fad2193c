"""Codes <-> bytes: the .vqd format, compress/decompress, entropy coding, text, JPEG/WebP, rate-distortion; the
model as ONNX graphs that decode anywhere (:mod:`.export`)."""
