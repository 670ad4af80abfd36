"""Labels and noise -> images and targets: label embeddings, features mixer, flow attention, generator.

With every part on (the paper's Figure 3): ``O^0, y = mixer(E, lambda)``, ``O^J = flow(O^0, z)``,
``image = G(O^J)``. The ablation switches replace a part by what GDFQ does instead:

* ``mixer`` off: ``O^0 = E_label``, ``y`` = the one-hot label;
* ``flow_attention`` off: ``image = G(z * O^0)`` (GDFQ's noise-times-embedding input);
* ``label_embeddings`` off: E keeps its random N(0, 1) initialisation (GDFQ's ``nn.Embedding``)
  instead of being replaced by the classifiers' rows after the warm-up (the training loop does that).

Every step draws its labels (uniform over the K prompts), mixing weights and noise ``z ~ N(0, I)``
the same way whatever is switched off, so ablations see the same random stream.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from d4c.generation.methods.enhancing_dfq.flow import FlowAttention
from d4c.generation.methods.enhancing_dfq.generator import ConditionalGenerator
from d4c.generation.methods.enhancing_dfq.mixer import FeaturesMixer, draw_mixing_weights
from d4c.generation.methods.enhancing_dfq.options import EnhancingDFQOptions


class ConditionalSampler(nn.Module):
    """The trainable generation network of EnhancingDFQ (everything but the per-layer classifiers)."""

    def __init__(self, num_classes: int, resolution: int, options: EnhancingDFQOptions):
        super().__init__()
        self.num_classes, self.resolution, self.options = num_classes, resolution, options
        d = options.latent_dim
        self.embeddings = nn.Parameter(torch.randn(num_classes, d))
        self.mixer = FeaturesMixer(d, options.mixer_heads) if options.mixer else None
        self.flow = (FlowAttention(d, options.layers, options.heads, options.flow_transforms,
                                   options.transformer_blocks) if options.flow_attention else None)
        self.generator = ConditionalGenerator(d, resolution, options.width)

    def draw_inputs(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(labels, mixing weights, z)`` for ``count`` images, on the generator's device."""
        device = generator.device
        labels = torch.randint(self.num_classes, (count,), generator=generator, device=device)
        weights = draw_mixing_weights(labels, self.num_classes, self.options.mix_prob, generator)
        z = torch.randn(count, self.options.latent_dim, generator=generator, device=device)
        return labels, weights, z

    def condition(self, labels: torch.Tensor, weights: torch.Tensor,
                  z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, y)``: the generator's input ``N x d`` and the targets ``N x K``."""
        if self.mixer is not None:
            embedding, targets = self.mixer(self.embeddings, weights)
        else:
            embedding, targets = self.embeddings[labels], F.one_hot(labels, self.num_classes).float()
        h = self.flow(embedding, z) if self.flow is not None else z * embedding
        return h, targets

    def forward(self, labels: torch.Tensor, weights: torch.Tensor,
                z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images N x 3 x R x R, targets N x K)``."""
        h, targets = self.condition(labels, weights, z)
        return self.generator(h), targets

    @torch.no_grad()
    def draw(self, count: int, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` images and their hard labels (the target's argmax), in full batches of ``batch_size``
        (batch statistics are those of training batches; a last partial batch is drawn whole and cut)."""
        images, labels = [], []
        for start in range(0, count, batch_size):
            batch_labels, weights, z = self.draw_inputs(batch_size, generator)
            batch, targets = self(batch_labels, weights, z)
            keep = min(batch_size, count - start)
            images.append(batch[:keep])
            labels.append(targets.argmax(dim=1)[:keep])
        return torch.cat(images), torch.cat(labels)
