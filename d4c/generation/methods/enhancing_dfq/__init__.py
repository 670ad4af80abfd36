"""EnhancingDFQ (Zhao et al., "Enhancing Diversity for Data-free Quantization", CVPR 2024), adapted to CLIP.

``--gen_method enhancing_dfq``: a generator-based method. Its classes are the generation prompts
(every template x class name of ``--custom_file``), its full-precision classifier is CLIP's
zero-shot head over them, ``softmax(n(f_I(x)) . t_k / 0.1)``. A GDFQ-style conditional generator
is trained with label embeddings from multi-layer features, the multi-layer features mixer and
normalisation-flow-based attention, on CE + SimLoss_1; the calibration images are then drawn
from it and go through the same cache, PNG export and progress reporting as every other method.
The quantization side of the paper (activation ranges trained with KL + SimLoss_2) is an option
(``--edfq finetune=true``, :mod:`.finetune`, run by the pipeline through
:meth:`~d4c.generation.methods.base.GenerationMethod.quantized_refinement`); by default the
suite's own PTQ calibrates on the images.

Modules: ``options`` (settings), ``generator`` (G), ``features`` (encoder taps), ``embeddings``
(per-layer classifiers, eq. 3-5), ``mixer`` (eq. 6), ``flow`` (eqs. 7-8), ``sampler`` (the parts
together, ablation switches), ``losses`` (CE, KL, SimLoss_1 / SimLoss_2), ``training`` (the loop),
``run`` (train or load, draw, save), ``finetune`` (the quantization loop). See
``docs/methods/enhancing_dfq.md``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from d4c.errors import D4CError
from d4c.generation.methods.base import GenerationMethod, Option, register
from d4c.generation.methods.enhancing_dfq.features import levels
from d4c.generation.methods.enhancing_dfq.options import (FILE_PARAMETER, PARAMETER, EnhancingDFQOptions,
                                                          parse_options)
from d4c.generation.pgsi import prompts_digest
from d4c.generation.settings import GenerationSettings

NAME = "enhancing_dfq"


def options_of(settings: GenerationSettings) -> EnhancingDFQOptions:
    """The EnhancingDFQ options ``settings`` set (``--edfq_config`` then ``--edfq``), resolved and checked."""
    values = EnhancingDFQ.option_values(settings)
    return parse_options(values[FILE_PARAMETER], values[PARAMETER])


@register
class EnhancingDFQ(GenerationMethod):
    """A trained conditional generator; the engine hands the whole generation to :func:`.run.train_and_draw`."""

    name = NAME
    trains_generator = True
    options = (
        Option(FILE_PARAMETER, None, "YAML mapping of EnhancingDFQ settings (docs/methods/enhancing_dfq.md): the "
                                     "ablation switches label_embeddings, mixer, flow_attention, losses; layers, "
                                     "latent_dim, width, lr_generator, ...; finetune", metavar="FILE"),
        Option(PARAMETER, [], "EnhancingDFQ settings applied after --edfq_config, repeatable and comma-separated "
                              "(e.g. --edfq mixer=false,layers=3 --edfq finetune=true)", metavar="KEY=VALUE"),
    )

    @classmethod
    def check_model(cls, model: torch.nn.Module) -> None:
        levels(model)

    @classmethod
    def check_options(cls, settings: GenerationSettings) -> None:
        options_of(settings)
        if settings.gen_groups > 1:  # K groups would be K generators, each trained on a share of the steps
            raise D4CError(f"must be 1 for enhancing_dfq (one trained generator draws every image), got "
                           f"{settings.gen_groups}.", "gen_groups")

    @classmethod
    def recipe_fields(cls, settings: GenerationSettings, prompts: Sequence[str] | None) -> dict[str, Any]:
        """The resolved settings the images depend on (not the file or flags that set them), and the prompts."""
        return {"prompts_sha256": prompts_digest(prompts or []), "num_prompts": len(prompts or []),
                "enhancing_dfq": options_of(settings).image_fields()}

    @classmethod
    def train_and_draw(cls, model: torch.nn.Module, settings: GenerationSettings, device: torch.device,
                       prompts: Sequence[str] | None, checkpoint: Any = None, trained: Any = None,
                       progress: bool = True, on_iteration: Callable[[int], None] | None = None) -> Any:
        from d4c.generation.methods.enhancing_dfq.run import train_and_draw  # needs the engine (imports methods)

        return train_and_draw(model, settings, device, prompts, checkpoint=checkpoint, trained=trained,
                              progress=progress, on_iteration=on_iteration)

    @classmethod
    def quantized_refinement(cls, settings: GenerationSettings) -> Callable[..., dict[str, Any]] | None:
        """With ``finetune``: the paper's quantization loop (:mod:`.finetune`) on the run's trained generator."""
        if not options_of(settings).finetune:
            return None
        from d4c.generation.methods.enhancing_dfq.run import finetune_for_outcome

        return finetune_for_outcome


__all__ = ["EnhancingDFQ", "EnhancingDFQOptions", "NAME", "options_of", "parse_options"]
