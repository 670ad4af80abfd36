"""Block reconstruction: units and order, schedule, what is optimised, QDrop, hardening, and that it helps."""

from __future__ import annotations

import copy

import clip
import pytest
import torch
from clip.model import Bottleneck

from d4c.quantization.calibration import calibrate
from d4c.quantization.fake_quant import AdaRoundFakeQuantize
from d4c.quantization.qconfig import load_qconfig
from d4c.quantization.quant_clip import disable_quantization, quantize_clip, quantized_layers
from d4c.reconstruction import reconstruct
from d4c.reconstruction.engine import rounding_exponent
from d4c.reconstruction.units import encoder_plans

TEXTS = [f"a photo of a {c} number {i}." for i in range(16) for c in ("small", "large")]


def _calibrated(model, config_path, n_images=16, seed=0):
    torch.manual_seed(seed)
    qconfig = load_qconfig(config_path)
    fp = copy.deepcopy(model)
    res = model.visual.input_resolution
    images = torch.randn(n_images, 3, res, res)
    tokens = clip.tokenize(TEXTS)
    quantize_clip(model, qconfig)
    calibrate(model, images, tokens, progress=False)
    return model, fp, qconfig, images, tokens


def test_rounding_exponent_schedule():
    assert rounding_exponent(0, 100, 0.2, (20, 2)) is None
    assert rounding_exponent(19, 100, 0.2, (20, 2)) is None
    assert rounding_exponent(20, 100, 0.2, (20, 2)) == pytest.approx(20)
    assert rounding_exponent(60, 100, 0.2, (20, 2)) == pytest.approx(11)
    assert rounding_exponent(100, 100, 0.2, (20, 2)) == pytest.approx(2)
    assert rounding_exponent(0, 10, 0.0, (20, 2)) == pytest.approx(20)


@pytest.mark.parametrize("attention_unit, out_unit", [("linear", "core.out_proj"), ("core", "core")])
def test_units_and_their_order(micro_vit, micro_rn, fast_qconfig, attention_unit, out_unit):
    qconfig = load_qconfig(fast_qconfig("config48"))
    vit_plans = encoder_plans(quantize_clip(micro_vit, qconfig), attention_unit)
    assert [p.name for p in vit_plans] == ["visual", "text"]
    assert [u.name for u in vit_plans[0].units] == [
        f"visual.transformer.resblocks.0.{m}" for m in
        ("attn.q_proj", "attn.k_proj", "attn.v_proj", f"attn.{out_unit}", "mlp.c_fc", "mlp.c_proj")]
    assert vit_plans[1].units[0].name == "transformer.resblocks.0.attn.q_proj"
    rn_plans = encoder_plans(quantize_clip(micro_rn, qconfig), attention_unit)
    names = [u.name for u in rn_plans[0].units]
    assert names[:4] == ["visual.layer1.0", "visual.layer2.0", "visual.layer3.0", "visual.layer4.0"]
    assert names[4:] == [f"visual.attnpool.{p}" for p in ("q_proj", "k_proj", "v_proj", out_unit)]
    # every quantized layer belongs to exactly one unit
    for model, plans in ((micro_rn, rn_plans), (micro_vit, vit_plans)):
        covered = [name for plan in plans for unit in plan.units for name, _ in quantized_layers(model)
                   if name == unit.name or name.startswith(unit.name + ".")]
        assert sorted(covered) == sorted(name for name, _ in quantized_layers(model))


@torch.no_grad()
def _feature_error(model, fp, images, tokens):
    errs = []
    for q_out, fp_out in ((model.encode_image(images), fp.encode_image(images)),
                          (model.encode_text(tokens), fp.encode_text(tokens))):
        errs.append(((q_out - fp_out).norm() / fp_out.norm()).item())
    return errs


@pytest.mark.parametrize("arch", ["micro_vit", "micro_rn"])
def test_short_reconstruction_lowers_the_error(arch, request, fast_qconfig):
    model = request.getfixturevalue(arch)
    for module in model.visual.modules():  # CLIP zero-initialises bn3: make the Bottleneck convs matter
        if isinstance(module, Bottleneck):
            torch.nn.init.uniform_(module.bn3.weight, 0.5, 1.0)
    model, fp, qconfig, images, tokens = _calibrated(model, fast_qconfig("config44"))
    before = _feature_error(model, fp, images, tokens)
    recon = qconfig.recon.__class__(**{**qconfig.recon.__dict__, "iters": 200, "visual_batch_size": 8})
    reports = reconstruct(model, images, tokens, recon, "cpu", progress=False, encoders=("visual",))
    after = _feature_error(model, fp, images, tokens)
    assert after[0] < before[0], (before, after)
    assert after[1] == before[1]  # the text encoder was not reconstructed
    improved = [r.error_after < r.error_before for r in reports]
    assert sum(improved) >= 0.75 * len(reports), [(r.name, r.error_before, r.error_after) for r in reports]
    assert all(r.iters == 200 for r in reports)


ATTENTION_QUANTIZERS = ("q", "k", "v", "softmax")


@pytest.mark.parametrize("attention_unit", ["linear", "core"])
def test_only_rounding_and_scales_are_optimised_and_state_is_reset(micro_vit, fast_qconfig, attention_unit):
    model, _, qconfig, images, tokens = _calibrated(
        micro_vit, fast_qconfig("config44", recon={"drop_prob": 0.5, "attention_unit": attention_unit}))
    calibrated = {n: t.clone() for n, t in model.state_dict().items()}
    seen: dict[str, set] = {}
    drops: dict[str, float] = {}
    unit_names = [u.name for plan in encoder_plans(model, attention_unit) for u in plan.units]

    def spy(name):
        def hook(module, _args):
            if torch.is_grad_enabled():
                seen[name] = {n for n, p in model.named_parameters() if p.requires_grad}
                quantizer = module.input_quantizer if hasattr(module, "input_quantizer") else module.q_quantizer
                drops[name] = quantizer.drop_prob
        return hook

    handles = [model.get_submodule(n).register_forward_pre_hook(spy(n)) for n in unit_names]
    recon = qconfig.recon.__class__(**{**qconfig.recon.__dict__, "iters": 3, "visual_batch_size": 4,
                                       "text_batch_size": 4})
    reconstruct(model, images, tokens, recon, "cpu", progress=False)
    for h in handles:
        h.remove()
    q_proj = "visual.transformer.resblocks.0.attn.q_proj"
    assert seen[q_proj] == {f"{q_proj}.weight_quantizer.alpha", f"{q_proj}.input_quantizer.scale"}
    core = "transformer.resblocks.0.attn.core"
    out_proj = {f"{core}.out_proj.weight_quantizer.alpha", f"{core}.out_proj.input_quantizer.scale"}
    attention_scales = {f"{prefix}.attn.core.{q}_quantizer.scale" for q in ATTENTION_QUANTIZERS
                        for prefix in ("transformer.resblocks.0", "visual.transformer.resblocks.0")}
    if attention_unit == "core":
        assert seen[core] == out_proj | {f"{core}.{q}_quantizer.scale" for q in ATTENTION_QUANTIZERS}
        assert any(not torch.equal(model.state_dict()[n], calibrated[n]) for n in attention_scales)
    else:  # the reference's units: q/k/v/softmax quantizers keep their calibrated scales
        assert seen[f"{core}.out_proj"] == out_proj
        for name in attention_scales:
            torch.testing.assert_close(model.state_dict()[name], calibrated[name], rtol=0, atol=0)
    assert set(drops) == set(unit_names) and all(p == 0.5 for p in drops.values())
    assert not any(p.requires_grad for p in model.parameters())
    for _, q in model.named_modules():
        if hasattr(q, "drop_prob"):
            assert q.drop_prob == 1.0
    for name, layer in quantized_layers(model):
        quantizer = layer.weight_quantizer
        assert isinstance(quantizer, AdaRoundFakeQuantize) and not quantizer.soft
        scale, zp = quantizer.scale.view(-1, 1), quantizer.zero_point.view(-1, 1)
        integers = layer.weight.reshape(layer.weight.shape[0], -1) / scale + zp
        torch.testing.assert_close(integers, integers.round(), rtol=0, atol=1e-3)


def test_full_precision_copy_is_untouched_and_quantizers_stay_on(micro_rn, fast_qconfig):
    model, fp, qconfig, images, tokens = _calibrated(micro_rn, fast_qconfig("config48"))
    reference = copy.deepcopy(model)
    disable_quantization(reference)
    recon = qconfig.recon.__class__(**{**qconfig.recon.__dict__, "iters": 2, "visual_batch_size": 4,
                                       "text_batch_size": 4})
    reconstruct(model, images, tokens, recon, "cpu", progress=False, encoders=("visual",))
    # text units were not touched; visual weights moved onto the grid
    for name, p in model.named_parameters():
        if name.startswith("transformer."):
            torch.testing.assert_close(p, reference.get_parameter(name))
    changed = [name for name, p in model.named_parameters()
               if name.startswith("visual.layer") and name.endswith("conv1.weight")
               and not torch.equal(p, reference.get_parameter(name))]
    assert changed
    assert all(q.fake_quant_enabled for n, q in model.named_modules() if hasattr(q, "fake_quant_enabled"))


def test_bottleneck_unit_with_precomputed_downsample_matches_the_block(micro_rn, fast_qconfig):
    from d4c.reconstruction.forward import UnitForward
    from d4c.reconstruction.units import Unit

    model, _, _, _, _ = _calibrated(micro_rn, fast_qconfig("config48"))
    block = model.visual.layer2[0]
    assert block.downsample is not None
    torch.nn.init.uniform_(block.bn3.weight, 0.5, 1.0)
    x = torch.randn(6, block.conv1.in_channels, 8, 8)
    forward = UnitForward(block, [x], {}, Unit("visual.layer2.0", 0, 1), torch.device("cpu"), torch.device("cpu"))
    assert len(forward.tensors) == 2
    with torch.no_grad():
        torch.testing.assert_close(forward([t[1:4] for t in forward.tensors]), block(x[1:4].clone()))


@pytest.mark.cuda
@pytest.mark.parametrize("keep_gpu", [True, False])
def test_keep_gpu_decides_where_caches_live_on_cuda(micro_vit, fast_qconfig, monkeypatch, keep_gpu):
    import d4c.reconstruction.engine as engine

    device = torch.device("cuda")
    model = micro_vit.to(device)
    qconfig = load_qconfig(fast_qconfig("config48", recon={"keep_gpu": keep_gpu, "iters": 3,
                                                           "visual_batch_size": 4, "text_batch_size": 4}))
    images = torch.randn(8, 3, 32, 32, device=device)
    tokens = clip.tokenize(TEXTS[:8]).to(device)
    quantize_clip(model, qconfig)
    calibrate(model, images, tokens, progress=False)
    seen = []
    original = engine.reconstruct_unit

    def spy(module, inputs, kwargs, target, *args, **kw):
        seen.append((inputs[0].device.type, target.device.type))
        return original(module, inputs, kwargs, target, *args, **kw)

    monkeypatch.setattr(engine, "reconstruct_unit", spy)
    reports = reconstruct(model, images, tokens, qconfig.recon, device, progress=False)
    expected = "cuda" if keep_gpu else "cpu"
    assert seen and all(s == (expected, expected) for s in seen)
    assert all(r.iters == 3 for r in reports)
    with torch.no_grad():
        assert torch.isfinite(model.encode_image(images)).all()


def test_interrupted_reconstruction_resumes_to_the_same_result(micro_vit, fast_qconfig, monkeypatch, tmp_path):
    import d4c.reconstruction.engine as engine
    from d4c.reconstruction.checkpoint import ReconCheckpoint

    config = fast_qconfig("config48", recon={"iters": 4, "visual_batch_size": 4, "text_batch_size": 4,
                                             "drop_prob": 0.5})
    model, _, qconfig, images, tokens = _calibrated(micro_vit, config)
    calibrated = copy.deepcopy(model)
    torch.manual_seed(123)
    straight = reconstruct(copy.deepcopy(calibrated), images, tokens, qconfig.recon, "cpu", progress=False)
    reference = copy.deepcopy(calibrated)
    torch.manual_seed(123)
    reconstruct(reference, images, tokens, qconfig.recon, "cpu", progress=False)

    original, calls = engine.reconstruct_unit, []

    def interrupt_on_eighth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    path = tmp_path / "run.recon-ckpt.pt"
    torch.manual_seed(123)
    monkeypatch.setattr(engine, "reconstruct_unit", interrupt_on_eighth)
    with pytest.raises(KeyboardInterrupt):
        reconstruct(copy.deepcopy(calibrated), images, tokens, qconfig.recon, "cpu", progress=False,
                    checkpoint=ReconCheckpoint(path, {"run": 1}, interval_s=0))
    monkeypatch.setattr(engine, "reconstruct_unit", original)
    assert path.is_file()
    resumed = copy.deepcopy(calibrated)
    torch.manual_seed(999)  # the checkpoint restores the random state of the interrupted run
    reports = reconstruct(resumed, images, tokens, qconfig.recon, "cpu", progress=False,
                          checkpoint=ReconCheckpoint(path, {"run": 1}, interval_s=0))
    assert [r.name for r in reports] == [r.name for r in straight]
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    with pytest.warns(UserWarning, match="another run"):
        other = ReconCheckpoint(path, {"run": 2}, interval_s=0)
        assert other.load(copy.deepcopy(calibrated), torch.Generator()) == ([], [])


def test_loss_reductions_against_direct_formulas():
    import numpy as np

    from d4c.reconstruction.engine import loss_sum_dim, reconstruction_loss
    from d4c.reconstruction.units import Unit

    torch.manual_seed(0)
    out, target = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    sq = (out.double().numpy() - target.double().numpy()) ** 2
    token_unit, conv_unit = Unit("t", 1, -1), Unit("c", 0, 1)
    # the reference's ((y_hat - y) ** 2).sum(dim=1).mean() on batch-first [N, L, D]: sum over tokens
    dim1 = loss_sum_dim(token_unit, "dim1")
    assert reconstruction_loss(out, target, dim1).item() == pytest.approx(sq.sum(axis=1).mean(), rel=1e-6)
    # loss_sum: channels, sum over each token's features, mean over images and tokens
    channels = loss_sum_dim(token_unit, "channels")
    assert reconstruction_loss(out, target, channels).item() == pytest.approx(sq.sum(axis=2).mean(), rel=1e-6)
    mask = np.array([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    kept = torch.from_numpy(mask)
    assert reconstruction_loss(out, target, channels, kept).item() == pytest.approx(
        sq.sum(axis=2)[mask].mean(), rel=1e-6)
    assert reconstruction_loss(out, target, dim1, kept).item() == pytest.approx(
        (sq * mask[:, :, None]).sum(axis=1).mean(), rel=1e-6)
    conv_out, conv_target = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    conv_sq = (conv_out.double().numpy() - conv_target.double().numpy()) ** 2
    for loss_sum in ("dim1", "channels"):  # convolutions sum over channels either way
        got = reconstruction_loss(conv_out, conv_target, loss_sum_dim(conv_unit, loss_sum)).item()
        assert got == pytest.approx(conv_sq.sum(axis=1).mean(), rel=1e-6)


def _attention_by_hand(q, k, v, heads):
    """Multi-head attention from projected q, k, v (batch-first [N, L, E]): softmax(q k^T / sqrt(d)) v."""
    n, length, width = q.shape
    split = lambda t: t.reshape(n, t.shape[1], heads, width // heads).transpose(1, 2)  # noqa: E731
    scores = split(q) @ split(k).transpose(-1, -2) / (width // heads) ** 0.5
    return scores.softmax(-1), split(v)


def test_out_projection_unit_sees_the_attention_through_its_quantizers(micro_vit, fast_qconfig, monkeypatch):
    import d4c.reconstruction.engine as engine

    config = fast_qconfig("config44", recon={"iters": 2, "visual_batch_size": 4, "text_batch_size": 4})
    model, _, qconfig, images, tokens = _calibrated(micro_vit, config)
    prefix = "visual.transformer.resblocks.0.attn"
    cached, original = {}, engine.reconstruct_unit

    def spy(module, inputs, kwargs, target, unit, *args, **kw):
        cached[unit.name] = [x.clone() for x in inputs]
        return original(module, inputs, kwargs, target, unit, *args, **kw)

    monkeypatch.setattr(engine, "reconstruct_unit", spy)
    reconstruct(model, images, tokens, qconfig.recon, "cpu", progress=False, encoders=("visual",))
    attn = model.get_submodule(prefix)
    core = attn.core
    with torch.no_grad():
        x = cached[f"{prefix}.q_proj"][0]  # the block's quantized ln_1 output, batch-first
        q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)  # hardened when out_proj's input was cached
        probs, values = _attention_by_hand(core.q_quantizer(q), core.k_quantizer(k), core.v_quantizer(v),
                                           core.num_heads)
        expected = (core.softmax_quantizer(probs) @ values).transpose(1, 2).reshape(x.shape)
        probs_fp, values_fp = _attention_by_hand(q, k, v, core.num_heads)
        unquantized = (probs_fp @ values_fp).transpose(1, 2).reshape(x.shape)
    got = cached[f"{prefix}.core.out_proj"][0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - unquantized).abs().max() > 10 * (got - expected).abs().max()  # the quantizers were on


def test_only_tokens_that_reach_the_output_count(micro_vit, fast_qconfig):
    plans = encoder_plans(quantize_clip(micro_vit, load_qconfig(fast_qconfig("config48"))))
    last = {u.name.rsplit(".", 1)[-1]: u.output_token_only for u in plans[1].blocks[-1].units}
    assert last == {"q_proj": True, "k_proj": False, "v_proj": False, "out_proj": True, "c_fc": True, "c_proj": True}
    tokens = clip.tokenize(["a b", "a b c d"], context_length=8)
    valid, output = plans[1].token_positions(tokens)
    assert valid.tolist() == [[True] * 4 + [False] * 4, [True] * 6 + [False] * 2]
    assert output.tolist() == [[False] * 3 + [True] + [False] * 4, [False] * 5 + [True] + [False] * 2]
    valid, output = plans[0].token_positions(torch.zeros(2, 3, 32, 32))
    assert valid is None and output.shape == (2, 5) and output[:, 0].all() and not output[:, 1:].any()


@pytest.mark.parametrize("token_loss", ["relevant", "all"])
def test_token_loss_setting_decides_the_masks(micro_vit, fast_qconfig, monkeypatch, token_loss):
    import d4c.reconstruction.engine as engine

    config = fast_qconfig("config48", recon={"iters": 1, "visual_batch_size": 2, "text_batch_size": 2,
                                             "token_loss": token_loss})
    model, _, qconfig, images, tokens = _calibrated(micro_vit, config)
    assert qconfig.recon.token_loss == token_loss
    masks = {}
    original = engine.reconstruct_unit

    def spy(module, inputs, kwargs, target, unit, *args, **options):
        masks[unit.name] = args[-1]
        return original(module, inputs, kwargs, target, unit, *args, **options)

    monkeypatch.setattr(engine, "reconstruct_unit", spy)
    reconstruct(model, images, tokens, qconfig.recon, "cpu", progress=False)
    if token_loss == "all":
        assert all(m is None for m in masks.values())
        return
    eot = tokens.argmax(-1)
    assert masks["visual.transformer.resblocks.0.attn.k_proj"] is None
    assert masks["visual.transformer.resblocks.0.attn.q_proj"][:, 0].all()  # the only block is the last one
    assert masks["visual.transformer.resblocks.0.attn.q_proj"].sum() == len(images)
    text_kv = masks["transformer.resblocks.0.attn.k_proj"]
    assert text_kv.sum(1).tolist() == (eot + 1).tolist()
    text_mlp = masks["transformer.resblocks.0.mlp.c_fc"]
    assert text_mlp.sum(1).tolist() == [1] * len(tokens) and text_mlp[torch.arange(len(tokens)), eot].all()


def test_cutting_text_padding_keeps_the_losses(micro_vit, fast_qconfig, monkeypatch):
    import d4c.reconstruction.engine as engine

    config = fast_qconfig("config48", recon={"iters": 20, "text_batch_size": 4})
    model, _, qconfig, images, tokens = _calibrated(micro_vit, config)
    assert tokens.argmax(-1).max() + 1 < tokens.shape[1]  # there is padding to cut
    results = {}
    for truncate in (True, False):
        monkeypatch.setattr(engine, "TRUNCATE_PADDING", truncate)
        candidate = copy.deepcopy(model)
        torch.manual_seed(0)
        reports = reconstruct(candidate, images, tokens, qconfig.recon, "cpu", progress=False, encoders=("text",))
        results[truncate] = (candidate.state_dict(), reports)
    cut, full = results[True][1], results[False][1]
    # the same loss on the same cached rows: padding never reaches a counted token
    assert cut[0].error_before == pytest.approx(full[0].error_before, rel=1e-5)
    # LSQ scales its gradients by the tensor size, which Adam normalises away up to its epsilon,
    # so training ends (almost) the same
    for a, b in zip(cut, full):
        assert a.error_after == pytest.approx(b.error_after, rel=2e-2)
    weights = [n for n in results[True][0] if n.endswith(".weight") and "resblocks" in n]
    same = sum(int((results[True][0][n] == results[False][0][n]).sum()) for n in weights)
    total = sum(results[True][0][n].numel() for n in weights)
    assert same / total > 0.999
