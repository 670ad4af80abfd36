"""Quantization: integer grids and fake quantization, observers, quantizers, quantized CLIP."""
