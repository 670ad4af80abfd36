"""Everything a run can check before it loads a model, so a mistake costs seconds, not hours.

:func:`check_run` is called once, first thing, by :func:`d4c.pipeline.run`. It checks

* every file or folder the run will write: the result (``--output``), the saved quantized model
  (``<result>.quant.pt``), the reconstruction checkpoint (``<result>.recon-ckpt.pt``), the PNG
  folder (``--img_path``), the pseudo-image cache (``--gen_cache_dir``) and the weight-range cache
  (``--range_cache_dir``): none may be a folder where a file goes or a file where a folder goes,
  and the nearest existing folder above each must be writable;
* the inputs that are files: ``--q_config`` and ``--custom_file`` (a folder is not a file);
* the datasets (layout and content, :func:`d4c.data.datasets.check_dataset`);
* the model, as far as it is known without loading it: the OpenAI cache entry (folder, file,
  checksum, offline), or open_clip's architecture, tag and cache entry (``--model_type open_clip``),
  and the image tower's family against ``--gen_method bns`` / ``pse``.

:func:`check_generation` is the same for ``--gen_only`` (its record, the cache and PNG folders, the
input files and the model; no dataset).

:func:`finished_result` decides ``--skip_existing``: an existing result is skipped only when it
was made by the same model (its recorded identity), and a result of another model is never
overwritten silently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from d4c.config import RunConfig
from d4c.data.datasets import check_dataset
from d4c.errors import D4CError
from d4c.generation.cache import NO_CACHE
from d4c.io import resolve_resource
from d4c.models.identity import ModelIdentity
from d4c.models.loading import check_checkpoint_file, check_openai_cache, model_family
from d4c.quantization.state import quant_state_path
from d4c.reconstruction.checkpoint import recon_checkpoint_path

_FAMILY_METHODS = {"bns": ("resnet", "a ResNet image encoder (BatchNorm statistics), such as RN50", "pse"),
                   "pse": ("vit", "a ViT image encoder (patch tokens and attention), such as ViT-B/32", "bns")}
_FAMILY_NAMES = {"vit": "a ViT", "resnet": "a ResNet"}


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _check_creatable(path: Path, parameter: str, shown: Path) -> None:
    """The folder ``path`` (or the folder a file goes in) can be created and written."""
    anchor = _nearest_existing(path)
    if not anchor.is_dir():
        raise D4CError(f"{shown} cannot be created: {anchor} is a file, not a folder.", parameter)
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise D4CError(f"{shown} cannot be written: the folder {anchor} is not writable.", parameter)


def check_file_target(path: Path, parameter: str, what: str = "file") -> None:
    """``path`` (the value of ``parameter``) can be written as a file: not a folder, its folder creatable
    and writable."""
    if path.is_dir():
        instead = (f"name a file, such as {path / 'result.json'}" if what == "result"
                   else "remove that folder or choose another output")
        raise D4CError(f"{path} is a folder, but the run writes its {what} there: {instead}.", parameter)
    _check_creatable(path.parent, parameter, path)


def check_folder_target(path: Path, parameter: str) -> None:
    """``path`` (the value of ``parameter``) can be used as a folder: not a file, creatable and writable."""
    if os.path.lexists(path) and not path.is_dir():
        raise D4CError(f"{path} is a file, but the run writes files into it: name a folder.", parameter)
    _check_creatable(path, parameter, path)


def _check_input_file(value: str, parameter: str) -> None:
    if resolve_resource(value).is_dir():
        raise D4CError(f"{value} is a folder, expected a file.", parameter)


def _writes_quantized_model(config: RunConfig) -> bool:
    return not config.fp_model and not config.load_quant


def output_targets(config: RunConfig, output: Path) -> Iterable[tuple[Path, str, str]]:
    """``(path, parameter, kind)`` of every location the run may write; kind is ``folder`` or what the file is."""
    yield output, "output", "result"
    if _writes_quantized_model(config):
        yield quant_state_path(output), "output", "quantized model (.quant.safetensors beside the result)"
        if config.recon:
            yield recon_checkpoint_path(output), "output", "reconstruction checkpoint (.recon-ckpt.pt beside the result)"
        if config.range_cache_dir not in NO_CACHE:
            yield Path(config.range_cache_dir).expanduser(), "range_cache_dir", "folder"
        if config.dfq and config.gen_img:
            if config.gen_cache_dir not in NO_CACHE:
                yield Path(config.gen_cache_dir).expanduser(), "gen_cache_dir", "folder"
            if config.img_path:
                yield Path(config.img_path).expanduser(), "img_path", "folder"


def check_outputs(config: RunConfig, output: Path) -> None:
    """One sentence for the first output location that cannot be written."""
    for path, parameter, kind in output_targets(config, output):
        if kind == "folder":
            check_folder_target(path, parameter)
        else:
            check_file_target(path, parameter, kind)


def check_model(config: RunConfig) -> None:
    """What is known about ``--model`` without loading it: the family a baseline needs, its cache entry."""
    import clip

    method = config.generation.method
    needs = _FAMILY_METHODS.get(method) if config.dfq and config.gen_img and not config.fp_model \
        and not config.load_quant else None
    if config.model_type == "open_clip":
        # open_clip's architecture, tag or file, and its cache entry; the tower is known from the config
        from d4c.models.open_clip_loading import check_open_clip_model

        family = check_open_clip_model(config.model, config.pretrained, config.model_cache_dir)
    else:
        family = model_family(config.model) if needs is not None else None
    if needs is not None and family is not None and family != needs[0]:
        raise D4CError(f"{method} ({method.upper()}) needs {needs[1]}, but {config.model} is "
                       f"{_FAMILY_NAMES[family]}: use {needs[2]} or baseline.", "method")
    if config.model_type != "openai":
        return
    if config.model in clip.available_models():
        check_openai_cache(config.model, config.model_cache_dir)
    elif os.path.isfile(config.model):
        check_checkpoint_file(config.model)


def check_run(config: RunConfig, output: Path) -> None:
    """Every check that needs no model, in the order a user would fix them (see the module docstring)."""
    check_outputs(config, output)
    if not config.fp_model and not config.load_quant:
        _check_input_file(config.q_config, "q_config")
        _check_input_file(config.custom_file, "custom_file")
    check_dataset(config.dataset, config.dataset_root, config.split)
    if _writes_quantized_model(config) and not config.dfq:
        check_dataset(config.dataset, config.dataset_root, config.train_split)
    check_model(config)


def _describe_recorded(recorded: dict, name: str | None) -> str | None:
    try:
        return ModelIdentity(**recorded).describe()
    except TypeError:  # not a recorded identity
        return name


def check_generation_folders(config: RunConfig) -> None:
    """The folders a generation writes: its PNGs (``--img_path``) and the pseudo-image cache."""
    for folder, parameter in ((config.img_path, "img_path"), (config.gen_cache_dir, "gen_cache_dir")):
        if folder and folder not in NO_CACHE:
            check_folder_target(Path(folder).expanduser(), parameter)


def check_generation(config: RunConfig, output: Path) -> None:
    """``--gen_only``: the generation record, the folders, the input files and the model; no dataset is read."""
    check_file_target(output, "output", "generation record")
    check_generation_folders(config)
    _check_input_file(config.q_config, "q_config")
    _check_input_file(config.custom_file, "custom_file")
    check_model(config)


def finished_result(output: Path, identity: ModelIdentity) -> bool:
    """``--skip_existing``: True when ``output`` holds a result of this model (skip the run), False when
    there is no file (run).

    A result of another model, or a file that is no result at all, stops with one sentence instead of
    being skipped or overwritten (the ``--output`` template lacks ``{model}``, or names a foreign file).
    """
    if not output.is_file():
        return False
    try:
        record = json.loads(output.read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or not (record.get("model") or record.get("model_identity")):
        raise D4CError(f"{output} exists but is not a result file: remove it or choose another output.", "output")
    if identity.matches(record.get("model_identity"), record.get("model")):
        return True
    recorded = record.get("model_identity") if isinstance(record.get("model_identity"), dict) else {}
    made_by = recorded.get("name") or record.get("model")
    if recorded.get("model_type") or identity.model_type:  # the families tell apart what the names do not
        made_by = _describe_recorded(recorded, made_by)
    raise D4CError(f"{output} exists and holds a result of {made_by}, not of "
                   f"{identity.describe()}: add {{model}} to its template (or drop --skip_existing to overwrite it).",
                   "output")
