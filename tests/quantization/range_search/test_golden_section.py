"""The golden-section range search (MSEFastObserver): close to the exact optimum, never worse than min/max."""

from __future__ import annotations

import pytest
import torch

from d4c.quantization.qparams import quant_range
from d4c.quantization.range_search import golden_section_search, search_range
from tests.quantization.range_search.samples import errors as _errors
from tests.quantization.range_search.samples import sample as _sample

GOLDEN_DATA = ["gauss", "uniform", "relu", "student", "shifted"]


@pytest.mark.parametrize("kind", GOLDEN_DATA)
@pytest.mark.parametrize("bit, symmetric", [(4, False), (8, False), (8, True)])
@pytest.mark.parametrize("shape, ch_axis", [((4000,), -1), ((6, 500), 0)])
def test_golden_section_close_to_exhaustive(kind, bit, symmetric, shape, ch_axis):
    x = _sample(kind, shape, seed=bit + 20)
    qmin, qmax = quant_range(bit, symmetric)
    golden = _errors(x, *golden_section_search(x, qmin, qmax, symmetric, ch_axis), qmin, qmax, symmetric, ch_axis)
    exhaustive = _errors(x, *search_range(x, qmin, qmax, symmetric, ch_axis), qmin, qmax, symmetric, ch_axis)
    x_min = x.amin() if ch_axis < 0 else x.amin(1)
    x_max = x.amax() if ch_axis < 0 else x.amax(1)
    plain = _errors(x, x_min, x_max, qmin, qmax, symmetric, ch_axis)
    assert torch.all(golden <= exhaustive * 1.05)
    assert torch.all(golden <= plain)


@pytest.mark.parametrize("bit", [2, 16])
def test_golden_section_extreme_bit_widths(bit):
    for x, ch_axis in [(_sample("student", (3000,), seed=bit), -1), (_sample("shifted", (3, 400), seed=bit), 0)]:
        qmin, qmax = quant_range(bit, False)
        lo, hi = golden_section_search(x, qmin, qmax, False, ch_axis)
        x_min = x.amin() if ch_axis < 0 else x.amin(1)
        x_max = x.amax() if ch_axis < 0 else x.amax(1)
        plain = _errors(x, x_min, x_max, qmin, qmax, False, ch_axis)
        assert torch.all(_errors(x, lo, hi, qmin, qmax, False, ch_axis) <= plain)


def test_golden_section_degenerate_inputs():
    for x in (torch.zeros(20), torch.full((7,), 3.0), torch.tensor([2.0]), torch.tensor([-1e-9, 1e-9])):
        lo, hi = golden_section_search(x, 0, 255, False)
        assert torch.isfinite(lo) and torch.isfinite(hi) and lo <= hi
        plain = _errors(x, x.min(), x.max(), 0, 255, False, -1)
        assert _errors(x, lo, hi, 0, 255, False, -1) <= plain
