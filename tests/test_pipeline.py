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
    out.write_text('{"sentinel": true}\n')
    assert main(["--fp_model", "--model", "tiny-vit", "--dataset", "digits", "--output", str(out),
                 "--skip_existing"]) == 0
    assert out.read_text() == '{"sentinel": true}\n'
    assert "Skipping" in capsys.readouterr().out


def test_unknown_output_placeholder_is_an_error(tmp_path, capsys):
    assert main(["--fp_model", "--model", "tiny-vit", "--dataset", "digits",
                 "--output", str(tmp_path / "{datset}.json")]) == 2
    assert "{datset}" in capsys.readouterr().err
