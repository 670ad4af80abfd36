"""Small EnhancingDFQ settings for the offline zoo models."""

from __future__ import annotations

import pytest

from d4c.data.prompts import DIGITS_PROMPTS, load_prompt_file
from d4c.generation.methods.enhancing_dfq.options import EnhancingDFQOptions
from d4c.generation.settings import GenerationSettings

SMALL = dict(latent_dim=16, heads=2, width=8, flow_transforms=1)


def small_settings(**overrides) -> GenerationSettings:
    """EnhancingDFQ settings of a tiny generator; ``overrides`` go to the options (as ``--edfq KEY=VALUE``) or,
    if they are fields of GenerationSettings, to the settings."""
    setting_keys = set(GenerationSettings.__dataclass_fields__)
    options = {**SMALL, **{k: v for k, v in overrides.items() if k not in setting_keys}}
    EnhancingDFQOptions(**options)  # a typo in a test fails here
    values = dict(method="enhancing_dfq", num_images=6, gen_batch_size=4, gen_iter=6, gen_ckpt_every=2)
    values.update({k: v for k, v in overrides.items() if k in setting_keys})
    assignments = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items()]
    return GenerationSettings(**values, options={"edfq_config": None, "edfq": assignments})


@pytest.fixture(scope="session")
def digit_prompts() -> list[str]:
    return load_prompt_file(str(DIGITS_PROMPTS)).prompts()
