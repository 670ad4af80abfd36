"""``--dfq --gen_img --gen_method enhancing_dfq`` end to end through the command line on the zoo."""

from __future__ import annotations

import json

import pytest

from d4c.cli import main

SMALL = ["--edfq", "width=8", "--edfq", "latent_dim=16", "--edfq", "heads=2", "--edfq", "flow_transforms=1"]


def _run(tmp_path, name, *flags):
    out = tmp_path / f"{name}.json"
    assert main(["--dataset", "digits", "--num_workers", "0", "--output", str(out), *flags]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-vit", "tiny-rn"])
def test_enhancing_dfq_runs_end_to_end_and_reuses_its_generator(tmp_path, fast_qconfig, capsys, model):
    config = fast_qconfig("config44", calibrate={"visual": 4, "text": 16},
                          recon={"visual_batch_size": 2, "text_batch_size": 2})
    cache = tmp_path / "cache"
    gen = ["--dfq", "--gen_img", "--gen_method", "enhancing_dfq", "--gen_iter", "3", "--gen_batch_size", "2",
           "--gen_cache_dir", str(cache), "--custom_file", "./d4c/template/digits_classnames_templates.json", *SMALL]
    record = _run(tmp_path, "q", "--model", model, "--q_config", config, *gen, "--recon", "--recon_iters", "1",
                  "--img_path", str(tmp_path / "png"))
    assert record["method"] == "enhancing_dfq" and record["calibration_data"]["image_source"] == "enhancing_dfq"
    assert record["timings_s"]["generation"] > 0 and "finetune" not in record
    assert record["args"]["edfq"] == SMALL[1::2]
    assert len(list((tmp_path / "png").glob("*.png"))) == 4
    captions = json.loads((tmp_path / "png" / "captions.json").read_text())
    assert len(captions) == 4 and all(c.startswith("a ") for c in captions.values())
    assert len(list(cache.glob("*.generator.pt"))) == 1 and not list(cache.glob("*.ckpt.pt"))
    capsys.readouterr()

    tuned = _run(tmp_path, "tuned", "--model", model, "--q_config", config, *gen, "--edfq", "finetune=true",
                 "--edfq", "finetune_iters=2")
    out = capsys.readouterr().out
    assert "reusing 4 cached" in out and "Refined the quantized model" in out  # finetune leaves the images
    assert tuned["finetune"]["settings"]["finetune_iters"] == 2 and tuned["timings_s"]["finetune"] > 0

    ablated = _run(tmp_path, "ablated", "--model", model, "--q_config", config, *gen, "--edfq", "mixer=false")
    assert ablated["method"] == "enhancing_dfq" and len(list(cache.glob("*.generator.pt"))) == 2
