"""The MSE range search of the MSE observers (docs/method.md, "Observers").

The objective is the mean ``|x - fake_quant(x)|^p`` (``p = 2.4``) of a candidate range, per
tensor or per channel. The candidates, as in the reference implementation (QDrop's observer):

* **1-D** (one-sided data, or a symmetric grid): ``thres_i = xrange / num * i`` for
  ``i = 1..num`` with ``xrange = max(|min|, max)``; the range is ``[-thres, thres]``, with the
  empty side set to 0 for one-sided data (``[0, thres]`` for non-negative data);
* **2-D** (two-sided data, asymmetric grid): width ``w_i = (max+ - min-) / num * i`` for
  ``i = 1..num`` times every zero point ``zp`` of the grid: ``delta = w_i / (qmax - qmin)``,
  range ``[-zp * delta, w_i - zp * delta]``. For 8 bits that is 100 x 256 = 25,600 candidates.
  ``min- = min(min, 0)`` and ``max+ = max(max, 0)`` per channel: a channel whose values all lie
  on one side of 0 inside a two-sided tensor still gets widths that reach its extreme value,
  since every candidate range contains 0.

The first candidate with the strictly smallest error wins (ties keep the earlier one).

* :mod:`.exact` -- :func:`search_range` (MSEObserver): that choice by branch and bound with the
  lower bounds of :mod:`.bounds`, typically a handful of passes over the data instead of 25,600;
* :mod:`.golden_section` -- :func:`golden_section_search` (MSEFastObserver): the same objective
  minimised approximately by golden-section searches, never worse than min/max;
* :mod:`.reference` -- :func:`brute_force_search`, the loop itself: the oracle of the tests and
  the benchmark, too slow for calibration;
* :mod:`.common` -- what they share: constants, the input preamble, the grid, the error formula.
"""

from d4c.quantization.range_search.common import LP_NORM, NUM_CANDIDATES, data_sidedness
from d4c.quantization.range_search.exact import search_range
from d4c.quantization.range_search.golden_section import golden_section_search
from d4c.quantization.range_search.reference import brute_force_search, candidate_errors

__all__ = ["LP_NORM", "NUM_CANDIDATES", "brute_force_search", "candidate_errors", "data_sidedness",
           "golden_section_search", "search_range"]
