"""Figures from the pipeline's outputs (``d4c-figures``): pseudo images, losses, feature maps, per-layer SQNR, tables.

One module per figure (``images``, ``curves``, ``features``, ``layers``, ``tables``), each a
function from plain inputs to a matplotlib figure and the numbers behind it; ``sources`` reads the
pipeline's files (pseudo-image cache, result JSONs, saved quantized models), ``output`` writes
PNG and JSON atomically, ``cli`` is the command line.
"""
