"""Golden regression: two tiny generation recipes give the images they gave when GENERATION_CODE_VERSION was set.

The pseudo-image cache trusts GENERATION_CODE_VERSION (d4c/generation/cache.py): cached images of a
recipe are reused as long as it is unchanged. A change to the generation code that changes the
images must bump it, or runs would silently reuse images the new code would not make. These values
were recorded with the version below; when this test fails after an intended change, bump
GENERATION_CODE_VERSION and record the new values (the message prints them).

Losses are compared relative to their size; per-image means and standard deviations relative to
the images' scale (std ~ 1): both only by what another CPU's rounding cannot reach.
"""

from __future__ import annotations

import pytest
import torch

from d4c.data.prompts import DIGITS_PROMPTS, load_prompt_file
from d4c.generation import GenerationSettings, generate, settings_for_row
from d4c.generation.cache import GENERATION_CODE_VERSION

RECORDED_WITH_VERSION = 3
RECIPE = GenerationSettings(num_images=8, gen_batch_size=4, gen_iter=4, gen_ckpt_every=0, seed=0)
GOLDEN = {
    ("tiny-vit", "d4c3"): {
        "loss": [5.43809, 5.21469, 5.85893, 5.0063],
        "mean": [0.00101003, -0.0281482, 0.00630823, -0.0273748, -0.000179935, -0.0183425, -0.0232079, 0.0175679],
        "std": [1.0026, 0.999498, 1.00579, 1.0004, 1.01018, 1.00724, 0.984076, 0.998052],
    },
    ("tiny-rn", "bns"): {
        "loss": [48.1974, 32.342, 23.0559, 17.068],
        "mean": [-0.0124081, -0.00438108, -0.0103615, -0.00532397, 0.00753935, 0.00210378, 0.00373012, -0.000726802],
        "std": [0.996785, 0.995813, 0.993936, 0.990909, 0.991349, 0.999722, 0.997655, 1.00817],
    },
}
LOSS_RTOL = 1e-4
IMAGE_ATOL = 1e-4  # in units of the images' scale (std ~ 1)


@pytest.mark.parametrize("model, row", list(GOLDEN))
def test_tiny_recipes_reproduce_their_recorded_images(request, model, row):
    loaded = request.getfixturevalue(model.replace("-", "_"))
    prompts = load_prompt_file(str(DIGITS_PROMPTS)).prompts()
    result = generate(loaded.model, settings_for_row(row, RECIPE), "cpu", prompts, progress=False)
    got = {"loss": result.loss_history.tolist(), "mean": result.images.mean(dim=(1, 2, 3)).tolist(),
           "std": result.images.std(dim=(1, 2, 3)).tolist()}
    want = GOLDEN[(model, row)]
    advice = (f"the generation code changed the images of {model} {row}: if that is intended, bump "
              f"GENERATION_CODE_VERSION in d4c/generation/cache.py (now {GENERATION_CODE_VERSION}) and record "
              f"these values here: " + repr({k: [float(f"{v:.6g}") for v in vs] for k, vs in got.items()}))
    assert GENERATION_CODE_VERSION == RECORDED_WITH_VERSION, (
        f"GENERATION_CODE_VERSION is {GENERATION_CODE_VERSION}, the golden values were recorded with "
        f"{RECORDED_WITH_VERSION}: record the new values and set RECORDED_WITH_VERSION; " + advice)
    assert torch.allclose(torch.tensor(got["loss"]), torch.tensor(want["loss"]), rtol=LOSS_RTOL, atol=0), advice
    for key in ("mean", "std"):
        assert torch.allclose(torch.tensor(got[key]), torch.tensor(want[key]), rtol=0, atol=IMAGE_ATOL), advice
