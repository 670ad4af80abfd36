"""Full-precision evaluation end to end on the offline zoo, and the result file."""

from __future__ import annotations

import json

import clip
import pytest
import torch
import torch.nn.functional as F

from d4c.cli import main
from d4c.data.digits import DigitsDataset
from d4c.models.loading import load_clip

DOCUMENTED_ACC1 = 0.85  # README: zoo models reach at least this zero-shot top-1 on digits/test


def _reference_accuracy(name: str) -> float:
    """Zero-shot top-1 computed directly from the unwrapped CLIP model (no clip_benchmark)."""
    loaded = load_clip(name)
    model = loaded.model
    ds = DigitsDataset("test", loaded.preprocess)
    with torch.no_grad():
        weights = []
        for c in ds.classes:
            t = F.normalize(model.encode_text(clip.tokenize([tpl.format(c=c) for tpl in ds.templates])), dim=-1)
            weights.append(F.normalize(t.mean(0), dim=0))
        weights = torch.stack(weights, 1)
        images = torch.stack([ds[i][0] for i in range(len(ds))])
        logits = F.normalize(model.encode_image(images), dim=-1) @ weights
    return (logits.argmax(1) == torch.as_tensor(ds.targets)).float().mean().item()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_fp_evaluation_of_the_zoo(name, tmp_path, capsys):
    out = tmp_path / "{dataset}_{model}_{task}.json"
    assert main(["--fp_model", "--model", name, "--dataset", "digits", "--num_workers", "0",
                 "--output", str(out)]) == 0
    path = tmp_path / f"digits_{name}_zeroshot_classification.json"
    record = json.loads(path.read_text())
    acc1 = record["metrics"]["acc1"]
    assert acc1 >= DOCUMENTED_ACC1
    assert abs(acc1 - _reference_accuracy(name)) <= 1.5 / 539  # at most one borderline image differs
    assert f"acc1 {acc1:.4f}" in capsys.readouterr().out


@pytest.mark.slow
def test_result_file_has_the_documented_keys(tmp_path):
    out = tmp_path / "r.json"
    assert main(["--fp_model", "--model", "tiny-vit", "--dataset", "digits", "--num_workers", "0",
                 "--seed", "7", "--output", str(out)]) == 0
    record = json.loads(out.read_text())
    for key in ["dataset", "model", "task", "metrics", "method", "recon", "seed", "q_config", "args",
                "timings_s", "versions", "device", "created"]:
        assert key in record, key
    assert record["dataset"] == "digits" and record["model"] == "tiny-vit"
    assert record["task"] == "zeroshot_classification" and record["method"] == "fp" and record["seed"] == 7
    assert set(record["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert record["metrics"]["acc5"] >= record["metrics"]["acc1"]
    for stage in ["load_model", "generation", "calibration", "reconstruction", "evaluation", "total"]:
        assert stage in record["timings_s"]
    assert record["timings_s"]["evaluation"] > 0 and record["timings_s"]["generation"] is None
    assert record["versions"]["torch"] == torch.__version__.split("+")[0] or record["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert record["device"]["type"] in ("cpu", "cuda")
    assert record["args"]["gen_iter"] == 3000 and record["args"]["output"] == str(out)


def test_skip_existing_leaves_the_file_untouched(tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text('{"model": "tiny-vit", "sentinel": true}\n')  # a result file from before identities
    assert main(["--fp_model", "--model", "tiny-vit", "--dataset", "digits", "--output", str(out),
                 "--skip_existing"]) == 0
    assert out.read_text() == '{"model": "tiny-vit", "sentinel": true}\n'
    assert "Skipping" in capsys.readouterr().out


def test_skip_existing_never_skips_or_overwrites_another_models_result(tmp_path, capsys):
    out = tmp_path / "r.json"
    for text, fragment in (('{"model": "tiny-rn"}\n', "holds a result of tiny-rn"),
                           ('{"sentinel": true}\n', "is not a result file")):
        out.write_text(text)
        assert main(["--fp_model", "--model", "tiny-vit", "--dataset", "digits", "--output", str(out),
                     "--skip_existing"]) == 2
        assert fragment in capsys.readouterr().err
        assert out.read_text() == text


def test_unknown_output_placeholder_is_an_error(tmp_path, capsys):
    assert main(["--fp_model", "--model", "tiny-vit", "--dataset", "digits",
                 "--output", str(tmp_path / "{datset}.json")]) == 2
    assert "{datset}" in capsys.readouterr().err


def _run(tmp_path, name, *flags):
    out = tmp_path / f"{name}.json"
    assert main(["--dataset", "digits", "--num_workers", "0", "--output", str(out), *flags]) == 0
    return json.loads(out.read_text()), out


@pytest.mark.slow
def test_w8a8_real_data_ptq_stays_close_to_full_precision(tmp_path, fast_qconfig):
    fp, _ = _run(tmp_path, "fp", "--model", "tiny-vit", "--fp_model")
    q, out = _run(tmp_path, "q", "--model", "tiny-vit", "--q_config", fast_qconfig("config88"))
    assert abs(q["metrics"]["acc1"] - fp["metrics"]["acc1"]) <= 0.02
    assert q["method"] == "real" and q["recon"] is False
    assert q["q_config"]["w_qconfig"]["bit"] == 8 and q["q_config"]["a_qconfig"]["observer"] == "MinMaxObserver"
    assert q["q_config"]["recon"]["iters"] == 20000 and q["q_config"]["path"].endswith(".yaml")
    assert q["timings_s"]["calibration"] > 0 and q["timings_s"]["reconstruction"] is None
    assert q["calibration_data"] == {"images": 128, "texts": 512, "image_source": "real"}
    assert q["quant_state"] == str(tmp_path / "q.quant.safetensors") and (tmp_path / "q.quant.safetensors").is_file()
    assert fp["q_config"] is None and not (tmp_path / "fp.quant.safetensors").exists()


@pytest.mark.slow
def test_gaussian_dfq_with_reconstruction_and_saved_state_round_trip(tmp_path, fast_qconfig, capsys):
    config = fast_qconfig("config48", calibrate={"visual": 16, "text": 32},
                          recon={"visual_batch_size": 4, "text_batch_size": 4})
    q, _ = _run(tmp_path, "q", "--model", "tiny-rn", "--q_config", config, "--dfq", "--recon", "--recon_iters", "2")
    assert q["method"] == "gaussian" and q["recon"] is True and q["q_config"]["recon"]["iters"] == 2
    assert q["timings_s"]["reconstruction"] > 0 and q["reconstruction_steps"] == 2 * len(q["reconstruction_units"])
    assert q["reconstruction_units"][0]["name"] == "visual.layer1.0"
    assert not (tmp_path / "q.recon-ckpt.pt").exists()  # removed once reconstruction finished
    assert q["calibration_data"]["images"] == 16 and q["calibration_data"]["image_source"] == "gaussian"
    state = q["quant_state"]
    loaded, _ = _run(tmp_path, "loaded", "--model", "tiny-rn", "--load_quant", state)
    assert loaded["metrics"] == q["metrics"]
    assert loaded["loaded_quant_state"] is True and loaded["quant_state"] == state
    assert loaded["method"] == "gaussian" and loaded["recon"] is True and loaded["q_config"] == q["q_config"]
    assert loaded["timings_s"]["reconstruction"] is None
    capsys.readouterr()
    assert main(["--dataset", "digits", "--model", "tiny-vit", "--load_quant", state,
                 "--output", str(tmp_path / "x.json")]) == 2
    assert "holds a quantized tiny-rn" in capsys.readouterr().err


@pytest.mark.slow
def test_d4c_run_generates_calibrates_and_reuses_cached_images(tmp_path, fast_qconfig, capsys):
    config = fast_qconfig("config48", calibrate={"visual": 4, "text": 16},
                          recon={"visual_batch_size": 2, "text_batch_size": 2})
    gen = ["--dfq", "--gen_img", "--d4c_config", "3", "--gen_iter", "2", "--gen_batch_size", "2",
           "--gen_cache_dir", str(tmp_path / "cache"), "--custom_file", "./d4c/template/digits_classnames_templates.json"]
    q, _ = _run(tmp_path, "q", "--model", "tiny-vit", "--q_config", config, *gen, "--recon", "--recon_iters", "1")
    assert q["method"] == "d4c3" and q["recon"] is True
    assert q["timings_s"]["generation"] > 0 and q["timings_s"]["reconstruction"] > 0
    assert q["calibration_data"]["images"] == 4 and q["calibration_data"]["image_source"] == "d4c3"
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    capsys.readouterr()
    w8, _ = _run(tmp_path, "w8", "--model", "tiny-vit", "--q_config", fast_qconfig("config88", calibrate={"visual": 4, "text": 16}), *gen)
    assert "reusing 4 cached" in capsys.readouterr().out
    assert w8["method"] == "d4c3" and len(list((tmp_path / "cache").glob("*.pt"))) == 1


def test_reconstruction_fingerprint_digest_tells_image_sets_apart():
    from d4c.pipeline import _tensor_sha256

    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    other = images.clone()
    other[1, 2, 7, 7] += 1e-6
    assert _tensor_sha256(images) == _tensor_sha256(images.clone()) == _tensor_sha256(images.double())
    assert _tensor_sha256(images) != _tensor_sha256(other)


@pytest.mark.parametrize("flags, row, stage", [
    ([], "real", "calibration"),
    (["--dfq"], "gaussian", "generation"),
    (["--dfq", "--gen_img", "--gen_iter", "2", "--gen_batch_size", "2", "--d4c_config", "0"], "d4c0", "generation"),
])
def test_the_pipeline_calibrates_on_the_images_of_the_row(tmp_path, fast_qconfig, flags, row, stage):
    from d4c.cli import build_parser
    from d4c.config import RunConfig
    from d4c.data.datasets import build_dataset
    from d4c.pipeline import _calibration_images, _plan_quantization
    from d4c.results import StageTimer

    argv = ["--dataset", "digits", "--num_workers", "0", "--seed", "5", "--gen_cache_dir", "none",
            "--q_config", fast_qconfig(calibrate={"visual": 6}), "--custom_file",
            "./d4c/template/digits_classnames_templates.json", *flags]
    config = RunConfig.from_flags(vars(build_parser().parse_args(argv)))
    loaded, timer = load_clip("tiny-vit"), StageTimer()
    images = _calibration_images(config, _plan_quantization(config), loaded, torch.device("cpu"), timer)
    assert config.row == row and images.shape == (6, 3, 32, 32) and set(timer.seconds) == {stage}
    noise = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(5))  # the documented N(0, 1) draw
    if row == "gaussian":
        assert torch.equal(images, noise)
    elif row == "real":
        train = build_dataset("digits", None, "train", loaded.preprocess)
        pool = torch.stack([train[i][0] for i in range(len(train))]).flatten(1)
        assert all(bool((pool == image.flatten()).all(1).any()) for image in images)
    else:  # optimised from that starting point
        assert torch.isfinite(images).all() and not torch.allclose(images, noise)
