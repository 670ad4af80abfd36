"""What a user with genuine checkpoints, CIFAR and ImageNet meets, on stand-ins in the real formats.

Each mistake gives one sentence before the model is loaded (``load_clip`` is replaced by a function
that fails the test if called), or the run works. Stand-ins: :mod:`tests.standins`.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest
import torch

import d4c.pipeline
from d4c.cli import main
from d4c.data.datasets import build_dataset
from d4c.models import identity as identity_module
from d4c.models.identity import model_identity
from d4c.models.loading import load_clip
from tests import standins
from tests.conftest import MICRO_RN, MICRO_VIT, run_cli

DIGITS = ("--dataset", "digits", "--num_workers", "0")


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: the error must come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error was found")

    monkeypatch.setattr(d4c.pipeline, "load_clip", refuse)


def _error(capsys, *argv) -> str:
    capsys.readouterr()  # what earlier runs printed
    assert main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("d4c-quant: error: ") and lines[0].endswith("."), lines
    return lines[0]


# --- every output location, before the model -------------------------------------------------------

def test_output_locations_are_checked_before_the_model(tmp_path, capsys, no_model_load, fast_qconfig):
    folder = tmp_path / "existing"
    folder.mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    q = fast_qconfig()
    line = _error(capsys, "--fp_model", "--model", "tiny-vit", *DIGITS, "--output", str(folder))
    assert "--output" in line and "is a folder" in line
    line = _error(capsys, "--fp_model", "--model", "tiny-vit", *DIGITS, "--output", str(a_file / "result.json"))
    assert "cannot be created" in line and str(a_file) in line and "is a file" in line
    (tmp_path / "r.quant.safetensors").mkdir()
    line = _error(capsys, "--model", "tiny-vit", *DIGITS, "--q_config", q, "--output", str(tmp_path / "r.json"))
    assert "r.quant.safetensors is a folder" in line and "quantized model" in line and "remove that folder" in line
    (tmp_path / "c.recon-ckpt.pt").mkdir()
    line = _error(capsys, "--model", "tiny-vit", *DIGITS, "--q_config", q, "--recon", "--output", str(tmp_path / "c.json"))
    assert "c.recon-ckpt.pt is a folder" in line and "reconstruction checkpoint" in line
    generation = ("--model", "tiny-vit", *DIGITS, "--q_config", q, "--dfq", "--gen_img", "--output",
                  str(tmp_path / "g.json"))
    line = _error(capsys, *generation, "--img_path", str(a_file))
    assert line.startswith(f"d4c-quant: error: --img_path {a_file} is a file")
    line = _error(capsys, *generation, "--gen_cache_dir", str(a_file))
    assert f"--gen_cache_dir {a_file} is a file" in line
    line = _error(capsys, "--model", "tiny-vit", *DIGITS, "--q_config", q, "--range_cache_dir", str(a_file / "sub"),
                  "--output", str(tmp_path / "w.json"))
    assert "--range_cache_dir" in line and "is a file, not a folder" in line


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_output_folder_is_one_sentence(tmp_path, capsys, no_model_load):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        line = _error(capsys, "--fp_model", "--model", "tiny-vit", *DIGITS, "--output", str(locked / "r.json"))
        assert "not writable" in line
    finally:
        locked.chmod(0o700)


def test_input_files_that_are_folders(tmp_path, capsys, no_model_load):
    line = _error(capsys, "--model", "tiny-vit", *DIGITS, "--q_config", str(tmp_path), "--output", str(tmp_path / "r.json"))
    assert f"--q_config {tmp_path} is a folder, expected a file" in line
    line = _error(capsys, "--model", "tiny-vit", *DIGITS, "--custom_file", str(tmp_path),
                  "--output", str(tmp_path / "r.json"))
    assert "--custom_file" in line and "is a folder" in line


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_a_baseline_of_the_wrong_family_is_known_from_the_name_or_the_file(tmp_path, capsys, no_model_load,
                                                                          fast_qconfig):
    vit_file = tmp_path / "mine.pt"
    torch.save(MICRO_VIT.build(seed=0).state_dict(), vit_file)
    rn_archive = standins.openai_archive(tmp_path / "rn.jit", MICRO_RN)
    flags = (*DIGITS, "--q_config", fast_qconfig(), "--dfq", "--gen_img", "--output", str(tmp_path / "r.json"))
    for model, method, needs in (("tiny-vit", "bns", "ResNet"), (str(vit_file), "bns", "ResNet"),
                                 (str(rn_archive), "pse", "ViT"), ("ViT-B/32", "bns", "ResNet")):
        line = _error(capsys, "--model", model, "--gen_method", method, *flags, "--model_cache_dir", str(tmp_path))
        assert f"--gen_method {method} ({method.upper()}) needs a {needs}" in line, line


# --- datasets --------------------------------------------------------------------------------------

def test_cifar_stand_ins_load_with_torchvision(tmp_path):
    for name, classes in (("cifar10", 10), ("cifar100", 100)):
        root = standins.cifar_root(tmp_path / name, name)
        with pytest.warns(UserWarning, match="differ from the official release"):
            test = build_dataset(name, str(root), "test", None)
            train = build_dataset(name, str(root), "train", None)
        assert len(test) == 12 and len(train) == 30 and len(test.classes) == classes and test.templates
        image, label = test[3]
        assert image.size == (32, 32) and label == 3


@pytest.mark.parametrize("damage, fragment", [
    ("truncate", "is not a readable CIFAR python pickle"),
    ("float", "'data' must be a uint8 array"),
    ("no labels", "lacks the key 'labels'"),
    ("label range", "'labels' must lie in 0..9"),
])
def test_a_damaged_cifar_pickle_is_one_sentence_before_the_model(tmp_path, capsys, no_model_load, damage, fragment):
    root = standins.cifar_root(tmp_path)
    batch = root / "cifar-10-batches-py" / "test_batch"
    if damage == "truncate":
        batch.write_bytes(batch.read_bytes()[:500])
    else:
        with open(batch, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        if damage == "float":
            entry["data"] = entry["data"].astype("float32")
        elif damage == "no labels":
            del entry["labels"]
        else:
            entry["labels"][0] = 12
        with open(batch, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    line = _error(capsys, "--fp_model", "--model", "tiny-vit", "--dataset", "cifar10", "--dataset_root", str(root),
                  "--output", str(tmp_path / "r.json"))
    assert "test_batch" in line and fragment in line


def test_fp_run_on_cifar_stand_ins_through_the_command_line(tmp_path):
    root = standins.cifar_root(tmp_path / "data")
    out = tmp_path / "r.json"
    done = run_cli("--fp_model", "--model", "tiny-vit", "--dataset", "cifar10", "--dataset_root", str(root),
                   "--num_workers", "0", "--output", str(out))
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["dataset"] == "cifar10" and 0 <= record["metrics"]["acc1"] <= 1


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    return standins.imagenet_root(tmp_path_factory.mktemp("imagenet"))


def test_imagenet_stand_in_loads_with_torchvision(imagenet):
    dataset = build_dataset("imagenet1k", str(imagenet), "test", None)
    assert len(dataset) == 1000 and len(dataset.classes) == 1000 and len(dataset.templates) == 80
    image, label = dataset[7]
    assert image.size == (8, 8) and label == 7


def test_imagenet_mistakes_are_one_sentence_before_the_model(tmp_path, imagenet, capsys, no_model_load):
    root = tmp_path / "imagenet"
    shutil.copytree(imagenet, root)
    run = ("--fp_model", "--model", "tiny-vit", "--dataset", "imagenet1k", "--dataset_root", str(root),
           "--output", str(tmp_path / "r.json"))
    empty = sorted((root / "val").iterdir())[5]
    for image in empty.iterdir():
        image.unlink()
    assert f"class folder val/{empty.name} holds no image file" in _error(capsys, *run)
    shutil.rmtree(empty)
    assert "val/ holds 999 class folders, expected all 1000" in _error(capsys, *run)
    (root / "val" / "n99999999").mkdir()
    assert "val/n99999999 is not a synset of meta.bin" in _error(capsys, *run)
    (root / "meta.bin").write_bytes(b"definitely not torch")
    line = _error(capsys, *run)
    assert "meta.bin" in line and "is not torchvision's ImageNet meta file" in line
    (root / "meta.bin").unlink()
    (root / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(b"not the devkit")
    assert "ILSVRC2012_devkit_t12.tar.gz fails its MD5 checksum" in _error(capsys, *run)


@pytest.mark.slow
def test_fp_run_on_the_imagenet_stand_in(tmp_path, imagenet):
    out = tmp_path / "r.json"
    assert main(["--fp_model", "--model", "tiny-vit", "--dataset", "imagenet1k", "--dataset_root", str(imagenet),
                 "--num_workers", "0", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["metrics"]["acc1"] >= 0


# --- the model cache -------------------------------------------------------------------------------

@pytest.fixture
def no_network(monkeypatch):
    import urllib.request

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("offline", [True, False])
def test_a_cached_file_failing_its_checksum_is_named_and_never_replaced(tmp_path, capsys, monkeypatch, no_network,
                                                                        no_model_load, offline):
    if not offline:
        monkeypatch.delenv("D4C_OFFLINE")
    cache = standins.model_cache(tmp_path / "cache", MICRO_VIT)
    before = (cache / "ViT-B-32.pt").read_bytes()
    line = _error(capsys, "--fp_model", "--model", "ViT-B/32", "--model_cache_dir", str(cache), *DIGITS,
                  "--output", str(tmp_path / "r.json"))
    assert f"--model_cache_dir {cache} holds ViT-B-32.pt, but the file fails its SHA256 checksum" in line
    assert f"give the file itself as the model ({cache / 'ViT-B-32.pt'})" in line and "delete it" in line
    assert (cache / "ViT-B-32.pt").read_bytes() == before


def test_cache_entries_that_are_not_files(tmp_path, capsys, no_network, no_model_load):
    (tmp_path / "cache" / "RN50.pt").mkdir(parents=True)
    run = ("--fp_model", "--model", "RN50", *DIGITS, "--output", str(tmp_path / "r.json"))
    line = _error(capsys, *run, "--model_cache_dir", str(tmp_path / "cache"))
    assert "holds a folder RN50.pt, not the checkpoint file" in line
    (tmp_path / "afile").write_text("x")
    line = _error(capsys, *run, "--model_cache_dir", str(tmp_path / "afile"))
    assert line.startswith(f"d4c-quant: error: --model_cache_dir {tmp_path / 'afile'} cannot be a folder")


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_a_verified_cache_entry_loads_through_clip(tmp_path, monkeypatch, no_network):
    cache = standins.model_cache(tmp_path / "cache", MICRO_VIT)
    archive_state = torch.jit.load(str(cache / "ViT-B-32.pt")).state_dict()
    monkeypatch.setitem(identity_module.OPENAI_SHA256, "ViT-B/32", identity_module.file_sha256(cache / "ViT-B-32.pt"))
    loaded = load_clip("ViT-B/32", cache_dir=str(cache))
    assert loaded.source == "openai:ViT-B/32"
    assert torch.equal(loaded.model.visual.conv1.weight, archive_state["visual.conv1.weight"].float())
    assert model_identity(str(cache / "ViT-B-32.pt")).slug() == "ViT-B-32"  # the same file as the named model


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_a_checkpoint_named_like_another_architecture_is_refused(tmp_path, capsys, monkeypatch):
    archive = standins.openai_archive(tmp_path / "a" / "ViT-B-32.pt", MICRO_RN)
    line = _error(capsys, "--fp_model", "--model", str(archive), *DIGITS, "--output", str(tmp_path / "r.json"))
    assert "is named like ViT-B/32's checkpoint but holds a different model" in line
    assert "ResNet layers (1, 1, 1, 1)" in line and "ViT-B/32 (ViT 12 x 768, patch 32" in line
    state = tmp_path / "b" / "RN50.pt"
    state.parent.mkdir()
    torch.save(MICRO_VIT.build(seed=0).state_dict(), state)
    monkeypatch.setattr(d4c.pipeline, "load_clip", lambda *a, **k: pytest.fail("loaded before the check"))
    line = _error(capsys, "--fp_model", "--model", str(state), *DIGITS, "--output", str(tmp_path / "r.json"))
    assert "named like RN50's checkpoint" in line and "RN50 (ResNet layers (3, 4, 6, 3)" in line


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_an_archive_given_as_a_path_runs(tmp_path):
    archive = standins.openai_archive(tmp_path / "mine.pt", MICRO_VIT)
    out = tmp_path / "r.json"
    assert main(["--fp_model", "--model", str(archive), *DIGITS, "--output", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["model_identity"]["kind"] == "file" and record["model_identity"]["sha256"]


# --- outputs never collide; identities match ---------------------------------------------------------

def test_same_named_checkpoints_write_different_results(tmp_path, capsys):
    for folder, seed in (("a", 0), ("b", 1)):
        (tmp_path / folder).mkdir()
        torch.save(MICRO_RN.build(seed=seed).state_dict(), tmp_path / folder / "RN50x.pt")
    template = str(tmp_path / "out" / "{model}.json")
    a, b = str(tmp_path / "a" / "RN50x.pt"), str(tmp_path / "b" / "RN50x.pt")
    for model in (a, b):
        assert main(["--fp_model", "--model", model, *DIGITS, "--output", template, "--skip_existing"]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(written) == 2 and all(name.startswith("RN50x-") for name in written), written
    assert main(["--fp_model", "--model", a, *DIGITS, "--output", template, "--skip_existing"]) == 0
    assert "Skipping" in capsys.readouterr().out
    shutil.copy(tmp_path / "out" / f"{model_identity(a).slug()}.json", tmp_path / "fixed.json")
    line = _error(capsys, "--fp_model", "--model", b, *DIGITS, "--output", str(tmp_path / "fixed.json"),
                  "--skip_existing")
    assert f"holds a result of {a}" in line and "add {model} to its template" in line


def test_load_quant_matches_the_model_by_its_checkpoint(tmp_path, capsys, fast_qconfig):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    torch.save(MICRO_VIT.build(seed=0).state_dict(), tmp_path / "a" / "m.pt")
    shutil.copy(tmp_path / "a" / "m.pt", tmp_path / "b" / "copy.pt")
    torch.save(MICRO_VIT.build(seed=1).state_dict(), tmp_path / "b" / "other.pt")
    q = fast_qconfig(calibrate={"visual": 8, "text": 8})
    assert main(["--model", str(tmp_path / "a" / "m.pt"), *DIGITS, "--q_config", q, "--dfq",
                 "--output", str(tmp_path / "q.json")]) == 0
    state = str(tmp_path / "q.quant.safetensors")
    assert main(["--model", str(tmp_path / "b" / "copy.pt"), *DIGITS, "--load_quant", state,
                 "--output", str(tmp_path / "again.json")]) == 0
    line = _error(capsys, "--model", str(tmp_path / "b" / "other.pt"), *DIGITS, "--load_quant", state,
                  "--output", str(tmp_path / "x.json"))
    assert "holds a quantized" in line and "other.pt" in line
