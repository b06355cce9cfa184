"""course.latency: every format computes the same product it is timed on (int8 exactly, binary
as the dot products of signs), the byte counts, and the argument checks. No speed is asserted
(the machine is shared; the lab and the benchmarks report the ratios)."""

from __future__ import annotations

import numba
import pytest
import torch

from course import latency


def test_products_compute_the_product():
    fns = latency.matmul_products(3, 100, 70, seed=1)
    gen = torch.Generator().manual_seed(1)
    w, x = torch.randn(70, 100, generator=gen), torch.randn(3, 100, generator=gen)
    w8 = torch.randint(-127, 128, (70, 100), generator=gen, dtype=torch.int8)
    x8 = torch.randint(-127, 128, (3, 100), generator=gen, dtype=torch.int8)
    assert torch.allclose(fns["fp32"](), x @ w.t(), rtol=1e-5, atol=1e-4)
    assert torch.allclose(fns["fp16"]().float(), x @ w.t(), rtol=2e-2, atol=0.2)
    assert torch.equal(fns["int8"]().long(), x8.long() @ w8.long().t())
    signs = lambda t: torch.where(t >= 0, 1, -1)  # noqa: E731 - sign(0) = +1
    assert torch.equal(fns["binary"]().long(), signs(w) @ signs(x).t())


def test_weight_bytes():
    assert latency.weight_bytes(4096, 4096) == {"fp32": 2**26, "fp16": 2**25, "int8": 2**24,
                                                "binary": 2**21}
    assert latency.weight_bytes(65, 1)["binary"] == 16      # 65 bits: two 64-bit words


def test_latency_times_every_format_and_restores_the_threads():
    before = torch.get_num_threads(), numba.get_num_threads()
    timings = latency.matmul_latency(2, 64, 32, repeats=2, warmup=1)
    assert list(timings) == list(latency.FORMATS)
    assert all(t.median_s > 0 and t.repeats == 2 for t in timings.values())
    assert (torch.get_num_threads(), numba.get_num_threads()) == before


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="batch"):
        latency.matmul_products(0, 4, 4)
    with pytest.raises(TypeError, match="in_features"):
        latency.weight_bytes(4.0, 4)
    with pytest.raises(ValueError, match="threads"):
        latency.matmul_latency(1, 4, 4, threads=0)
