"""The interface every pseudo-image method implements, and the registry that finds them by name.

The registry is the only list of method names: ``--gen_method``'s choices, the paper rows a
method makes (:meth:`GenerationMethod.rows`), its own command-line options
(:attr:`GenerationMethod.options`) and the family baseline (``baseline``) all come from the
registered classes. Adding a method is one module in this folder with a ``@register``-ed class,
imported by ``methods/__init__.py`` (docs/design.md, "Adding a generation method").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import torch

from d4c.errors import D4CError
from d4c.generation.fastpaths import encode_images
from d4c.generation.priors import TV_WEIGHT, total_variation
from d4c.generation.settings import GenerationSettings

BASELINE = "baseline"
"""Not a method of its own: the family's baseline (:meth:`GenerationMethod.is_baseline_for`)."""

_REGISTRY: dict[str, type["GenerationMethod"]] = {}


@dataclass(frozen=True)
class Option:
    """A hyper-parameter of one method, and its command-line flag ``--<name>``.

    Name it after the method (``d4c_config``): every registered option is a flag of the same
    command line. Its value lives in :attr:`GenerationSettings.options` under ``name``. The flag
    is typed like ``default`` (a switch for a boolean; repeatable, collecting a list, for a list).
    """

    name: str
    default: Any
    help: str
    choices: tuple | None = None
    metavar: str | None = None


def register(cls: type["GenerationMethod"]) -> type["GenerationMethod"]:
    """Class decorator: make ``cls`` findable as ``method_class(cls.name)``."""
    taken = {option.name for other in _REGISTRY.values() if other is not cls for option in other.options}
    clash = [option.name for option in cls.options if option.name in taken]
    if cls.name == BASELINE or clash:
        raise ValueError(f"method {cls.name!r} reuses the name {BASELINE!r} or the options {clash}")
    _REGISTRY[cls.name] = cls
    return cls


def method_class(name: str) -> type["GenerationMethod"]:
    """The method registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise D4CError(f"{name!r} is not a pseudo-image method; choose one of {', '.join(method_choices())}.",
                       "method") from None


def available_methods() -> list[str]:
    """Names of every registered method."""
    return sorted(_REGISTRY)


def method_choices() -> list[str]:
    """What ``--gen_method`` accepts: every registered method and ``baseline``."""
    return [*available_methods(), BASELINE]


def method_options() -> list[Option]:
    """Every registered method's options, in registration order."""
    return [option for cls in _REGISTRY.values() for option in cls.options]


def option_owner(option: str) -> str:
    """The name of the method that declares ``option`` (``d4c_config`` -> ``d4c``)."""
    return next(cls.name for cls in _REGISTRY.values() if any(o.name == option for o in cls.options))


def resolve_method(name: str, model: torch.nn.Module) -> str:
    """The registered method ``name`` stands for on ``model``: itself, or for ``baseline`` the image
    tower's family baseline (BNS for ResNets, PSE for ViTs)."""
    if name != BASELINE:
        return method_class(name).name
    found = [cls.name for cls in _REGISTRY.values() if cls.is_baseline_for(model)]
    if len(found) != 1:
        raise D4CError(f"{BASELINE} needs a ViT (PSE) or ResNet (BNS) image encoder, but this model's is a "
                       f"{type(model.visual).__name__}.", "method")
    return found[0]


class GenerationMethod:
    """A pseudo-image objective over mini-batches of the image tensor.

    The engine (:mod:`d4c.generation.engine`) draws the initial images, calls :meth:`setup` once
    with a CPU generator for per-image random state (fixed for the whole run), then calls
    :meth:`loss` for every chunk of consecutive mini-batches and steps Adam on the pixels.
    """

    name: ClassVar[str]
    optimizes: ClassVar[bool] = True
    """False for methods that keep the initial N(0, 1) images (Gaussian noise)."""
    reads_batchnorm_inputs: ClassVar[bool] = False
    """True for methods that hook BatchNorm inputs (BNS): BN layers then stay unfolded while generating."""
    options: ClassVar[tuple[Option, ...]] = ()
    """This method's own hyper-parameters (each a flag); read them with :meth:`option_values`."""
    trains_generator: ClassVar[bool] = False
    """True for methods that train a generator instead of optimising pixels (EnhancingDFQ): the engine hands
    them the whole generation (:meth:`train_and_draw`)."""

    def __init__(self, model: torch.nn.Module, settings: GenerationSettings, prompts: Sequence[str] | None,
                 device: torch.device) -> None:
        self.check_model(model)
        self.model = model
        self.settings = settings
        self.device = torch.device(device)
        self.encode = self.encode_images
        """The image encoder the loss calls (the engine may swap in a compiled one)."""

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``f_I(images)`` through the generation fast paths (:func:`d4c.generation.fastpaths.encode_images`)."""
        return encode_images(self.model, images)

    @classmethod
    def check_model(cls, model: torch.nn.Module) -> None:
        """Raise a one-sentence :class:`D4CError` (parameter ``method``) when ``model``'s image tower cannot be used."""

    @classmethod
    def check_options(cls, settings: GenerationSettings) -> None:
        """Raise a one-sentence :class:`D4CError` (parameter: the option) for option values this method cannot
        use; called before any model is loaded (:meth:`d4c.config.RunConfig.validate`)."""

    @classmethod
    def is_baseline_for(cls, model: torch.nn.Module) -> bool:
        """True when this method is the prior data-free baseline of ``model``'s family (``--gen_method baseline``)."""
        return False

    @classmethod
    def option_values(cls, settings: GenerationSettings) -> dict[str, Any]:
        """This method's options as ``settings`` sets them (declared defaults for the others)."""
        return {option.name: settings.options.get(option.name, option.default) for option in cls.options}

    @classmethod
    def rows(cls) -> dict[str, dict[str, Any]]:
        """The paper-table rows this method makes: label -> the option values that select it."""
        return {cls.name: {}}

    @classmethod
    def row(cls, settings: GenerationSettings) -> str:
        """The row label of ``settings`` (its options select it among :meth:`rows`)."""
        values = cls.option_values(settings)
        for label, selects in cls.rows().items():
            if all(values[key] == value for key, value in selects.items()):
                return label
        raise ValueError(f"no row of {cls.name} has the options {values}")

    @classmethod
    def recipe_fields(cls, settings: GenerationSettings, prompts: Sequence[str] | None) -> dict[str, Any]:
        """Method-specific fields of the cache recipe (beyond model, sizes, optimiser, schedule, seed):
        by default its option values."""
        return cls.option_values(settings)

    @classmethod
    def train_and_draw(cls, model: torch.nn.Module, settings: GenerationSettings, device: torch.device,
                       prompts: Sequence[str] | None, checkpoint: Any = None, trained: Any = None,
                       progress: bool = True, on_iteration: Any = None) -> Any:
        """Methods with :attr:`trains_generator`: train (resuming from ``checkpoint``, or load the generator the
        artifact store ``trained`` holds), draw ``settings.num_images`` images, return a ``GenerationResult``
        whose ``generator`` is the trained one."""
        raise NotImplementedError

    @classmethod
    def quantized_refinement(cls, settings: GenerationSettings) -> Callable[..., dict[str, Any]] | None:
        """The method's own step on the calibrated quantized model before reconstruction, when ``settings`` ask
        for one (EnhancingDFQ's quantization loop, an option): a function ``(model, outcome, prompts, device)
        -> its part of the result record``, ``outcome`` being the generation's
        :class:`~d4c.generation.synthesis.SynthesisOutcome` (its trained generator, or where the cache keeps
        it); None (the default) for none."""
        return None

    def setup(self, num_images: int, resolution: int, generator: torch.Generator) -> None:
        """Draw per-image state that stays fixed for the run (targets, boxes)."""

    def loss(self, images: torch.Tensor, index: slice, groups: int, generator: torch.Generator) -> torch.Tensor:
        """The objective of ``images`` (images ``index`` of the whole tensor).

        ``images`` holds ``groups`` consecutive mini-batches of equal size; the result is the sum
        over the mini-batches of each mini-batch's loss (its mean over images plus ``0.1 * TV``),
        so one mini-batch (``groups=1``) gives exactly the reference schedule's step loss.
        ``generator`` supplies every per-step random draw (it lives on the images' device).
        """
        raise NotImplementedError

    def attach(self) -> None:
        """Install forward hooks on the model (called before the first loss)."""

    def detach(self) -> None:
        """Remove every hook installed by :meth:`attach`."""

    def state_dict(self) -> dict[str, Any]:
        """Per-image state to checkpoint (tensors)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class HookedTermsMethod(GenerationMethod):
    """A method whose loss is a sum of per-layer terms, taken by forward pre-hooks, plus TV (BNS, PSE).

    Subclasses name the hooked modules (:attr:`hooked`) and compute one layer's term from its
    input (:meth:`term`, summed over the ``groups`` mini-batches); :attr:`term_sign` turns a
    quantity to maximise (PSE's entropy) into a loss.
    """

    term_sign: ClassVar[float] = 1.0
    hooked: list[torch.nn.Module]

    def term(self, module: torch.nn.Module, inputs: torch.Tensor, groups: int) -> torch.Tensor:
        """One hooked layer's contribution, summed over the ``groups`` mini-batches of ``inputs``."""
        raise NotImplementedError

    def _hook(self, module: torch.nn.Module, args: tuple) -> None:
        self._terms.append(self.term(module, args[0], self._groups))

    def attach(self) -> None:
        self.detach()
        self._terms: list[torch.Tensor] = []
        self._groups = 1
        self._handles = [module.register_forward_pre_hook(self._hook) for module in self.hooked]

    def detach(self) -> None:
        for handle in getattr(self, "_handles", []):
            handle.remove()
        self._handles = []

    def loss(self, images: torch.Tensor, index: slice, groups: int, generator: torch.Generator) -> torch.Tensor:
        self._terms, self._groups = [], groups
        self.encode(images)
        total = torch.stack(self._terms).sum()
        self._terms = []
        return self.term_sign * total + TV_WEIGHT * total_variation(images, groups)
