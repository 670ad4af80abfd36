"""The paper's entry point, ``python d4c/solver/test_quant.py``."""
