"""Zero-shot evaluation."""

from d4c.evaluation.zeroshot import evaluate_zeroshot

__all__ = ["evaluate_zeroshot"]
