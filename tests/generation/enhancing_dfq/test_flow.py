"""Planar flows: log-determinant against autograd's Jacobian, invertibility; the flow attention."""

from __future__ import annotations

import torch

from d4c.generation.methods.enhancing_dfq.flow import FlowAttention, LevelMapping, PlanarFlow


def _jacobian_log_det(function, z: torch.Tensor) -> torch.Tensor:
    dets = []
    for row in z:
        jacobian = torch.autograd.functional.jacobian(lambda x: function(x[None])[0][0], row)
        dets.append(torch.linalg.slogdet(jacobian)[1])
    return torch.stack(dets)


def test_planar_log_det_matches_the_jacobian_and_the_condition_holds():
    torch.manual_seed(0)
    flow = PlanarFlow(5).double()
    with torch.no_grad():
        flow.u.copy_(torch.randn(5, dtype=torch.float64) * 2)
        flow.w.copy_(-flow.u * 1.5)  # w^T u << -1: u_hat must be corrected
        flow.b.fill_(0.3)
    with torch.no_grad():
        assert float(flow.w @ flow.u) < -1 and float(flow.w @ flow.u_hat()) >= -1 - 1e-12
    z = torch.randn(6, 5, dtype=torch.float64)
    _, log_det = flow(z)
    assert torch.allclose(log_det, _jacobian_log_det(flow, z), rtol=1e-8, atol=1e-10)


def test_level_mapping_is_invertible_and_log_dets_add_up():
    torch.manual_seed(1)
    mapping = LevelMapping(4, 3).double()
    with torch.no_grad():
        for transform in mapping.transforms:
            transform.u.mul_(20)
            transform.w.mul_(20)
    z = torch.randn(8, 4, dtype=torch.float64)
    y, log_det = mapping(z)
    assert not torch.allclose(y, z, atol=1e-2)
    assert torch.allclose(mapping.inverse(y), z, atol=1e-9)
    assert torch.allclose(log_det, _jacobian_log_det(mapping, z), rtol=1e-8, atol=1e-10)


def test_flow_attention_mixes_each_levels_noise_into_the_embedding():
    torch.manual_seed(2)
    attention = FlowAttention(dim=16, levels=3, heads=4, transforms=2, blocks=1)
    embedding, z = torch.randn(5, 16), torch.randn(5, 16)
    out = attention(embedding, z)
    assert out.shape == (5, 16)
    assert not torch.allclose(attention(embedding, torch.randn(5, 16)), out)
    assert not torch.allclose(attention(torch.randn(5, 16), z), out)
    # Level j sees (O^{j-1}, mapping^j(z)) only: with one level, O^1 is the first token of one block.
    one = FlowAttention(dim=16, levels=1, heads=4, transforms=2, blocks=1)
    level_noise, _ = one.mappings[0](z)
    expected = one.blocks[0][0](torch.stack([embedding, level_noise], dim=1))[:, 0]
    assert torch.allclose(one(embedding, z), expected)
