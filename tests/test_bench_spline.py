"""The spline benchmark (``bench/spline.py``) compares like with like: zuko's NSF sees the
data through the same data-initialised ``ActNorm`` as ``spline_flow``, and the table says
so (chapter 8 prints zuko's columns only from a table that does)."""

from __future__ import annotations

import torch
from torch import nn

from bench import spline
from bench.coupling import parameter_count


class _StandardNormal(nn.Module):
    """A stand-in for a zuko lazy distribution: ``flow()`` returns N(0, I) in 2D."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3))

    def forward(self):
        normal = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
        return torch.distributions.Independent(normal, 1)


def test_standardized_flow_sees_the_data_in_standard_units():
    flow = spline.Standardized(_StandardNormal())
    g = torch.Generator().manual_seed(0)
    first = torch.randn(512, 2, generator=g) * torch.tensor([30.0, 0.5])
    first = first + torch.tensor([200.0, -40.0])
    with torch.no_grad():
        log_q = flow.log_prob(first)
    mean, std = first.mean(0), first.std(0)
    expected = torch.distributions.Normal(mean, std).log_prob(first).sum(1)
    torch.testing.assert_close(log_q, expected, rtol=0, atol=1e-4)
    # the statistics come from the first batch only, and the scale is a parameter
    later = torch.randn(512, 2, generator=g)
    with torch.no_grad():
        flow.log_prob(later)
    torch.testing.assert_close(flow.standardize.shift.detach(), mean)
    assert parameter_count(flow) == 3 + 4


def test_spline_table_says_that_both_flows_are_standardized():
    row = {
        "density": "moved ring (unseen)",
        "seed": 0,
        "params": 23_140,
        "kl": 0.013,
        "se": 0.001,
        "seconds": 40.0,
        "cpu_s_per_100": 1.0,
        "zuko_params": 23_932,
        "zuko_width": 56,
        "zuko_kl": 0.02,
        "zuko_se": 0.001,
        "zuko_seconds": 50.0,
        "ratio": 0.8,
    }
    table = spline.format_table([row], 3000).splitlines()
    assert table[1] == spline.STANDARDIZED_LINE
    without = dict(row)
    for key in ("zuko_params", "zuko_width", "zuko_kl", "zuko_se", "zuko_seconds", "ratio"):
        without.pop(key)
    assert spline.STANDARDIZED_LINE not in spline.format_table([without], 3000)
