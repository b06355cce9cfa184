"""course.plots: what each figure draws (lines, bars, labels, data), not pixels."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from course import plots  # noqa: E402


@pytest.fixture(autouse=True)
def no_pyplot_side_effects(monkeypatch):
    """Every plot returns a Figure, never calls plt.show, and leaves pyplot's list alone."""
    def refuse(*args, **kwargs):
        raise AssertionError("plt.show must not be called")

    monkeypatch.setattr(plt, "show", refuse)
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def _renders(fig: Figure) -> None:
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- SQNR


def test_sqnr_plot_draws_each_series_and_the_rule():
    bits = [2, 4, 6, 8]
    data = {"per-tensor": [8.0, 20.0, 32.5, 44.0], "per-channel": [10.0, 22.0, 34.0, 46.5]}
    fig = plots.plot_sqnr_vs_bits(bits, data)
    _renders(fig)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["per-tensor", "per-channel",
                                                       "6.02 dB/bit rule"]
    for line, values in zip(ax.lines, data.values(), strict=False):
        np.testing.assert_array_equal(line.get_xdata(), bits)
        np.testing.assert_array_equal(line.get_ydata(), values)
    rule = ax.lines[-1]
    slopes = np.diff(rule.get_ydata()) / np.diff(rule.get_xdata())
    np.testing.assert_allclose(slopes, 6.02)
    # the rule passes through the median offset of the measured points
    offsets = [v - 6.02 * b for values in data.values() for b, v in zip(bits, values,
                                                                        strict=True)]
    assert rule.get_ydata()[0] == pytest.approx(6.02 * 2 + np.median(offsets))
    assert ax.get_ylabel() == "SQNR (dB)" and ax.get_xlabel() == "bits"
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "6.02 dB/bit rule"


def test_sqnr_plot_leaves_out_infinite_points_and_takes_another_rule():
    fig = plots.plot_sqnr_vs_bits([4, 8, 16], {"x": [24.0, 48.0, math.inf]},
                                  rule_db_per_bit=6.0)
    measured, rule = fig.axes[0].lines
    assert np.isnan(measured.get_ydata()[2])
    assert rule.get_label() == "6 dB/bit rule"
    np.testing.assert_allclose(rule.get_ydata(), [24.0, 48.0, 96.0])


def test_sqnr_plot_rejects_bad_input():
    with pytest.raises(ValueError, match=r"sqnr_by_label\['a'\] has 2 values, expected 3"):
        plots.plot_sqnr_vs_bits([2, 4, 8], {"a": [1.0, 2.0]})
    with pytest.raises(TypeError, match="sqnr_by_label must be a dict"):
        plots.plot_sqnr_vs_bits([2, 4], [1.0, 2.0])
    with pytest.raises(ValueError, match="bits must not be empty"):
        plots.plot_sqnr_vs_bits([], {})
    with pytest.raises(TypeError, match="rule_db_per_bit"):
        plots.plot_sqnr_vs_bits([2], {"a": [1.0]}, rule_db_per_bit="6")


# ----------------------------------------------------------------------------- accuracy


def test_accuracy_plot_draws_methods_float_line_and_reference_markers():
    bits = [8, 6, 4, 3, 2, 1]
    acc = {"direct": [0.97, 0.97, 0.95, 0.90, 0.6, 0.5],
           "QAT": [0.97, 0.97, 0.96, None, None, 0.93]}
    reference = {"lecture (direct)": {1: 0.5178}, "lecture (QAT)": [None] * 5 + [0.9522]}
    fig = plots.plot_accuracy_vs_bits(bits, acc, 0.9776, reference=reference)
    _renders(fig)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["direct", "QAT", "float 97.8%", "lecture (direct)", "lecture (QAT)"]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(6))
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), acc["direct"])
    qat = np.asarray(ax.lines[1].get_ydata(), dtype=float)
    assert np.isnan(qat[3:5]).all() and qat[5] == 0.93
    assert set(ax.lines[2].get_ydata()) == {0.9776}
    for line, value in zip(ax.lines[3:], [0.5178, 0.9522], strict=True):
        y = np.asarray(line.get_ydata(), dtype=float)
        assert line.get_linestyle() == "None" and line.get_marker() == "*"
        assert np.isnan(y[:5]).all() and y[5] == value
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "6", "4", "3", "2", "1"]
    assert ax.yaxis.get_major_formatter()(0.5, 0) == "50%"


def test_accuracy_plot_without_reference_and_with_string_labels():
    fig = plots.plot_accuracy_vs_bits(["8", "1 (sign)"], {"direct": [0.9, 0.5]},
                                      torch.tensor(0.95))
    ax = fig.axes[0]
    assert len(ax.lines) == 2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "1 (sign)"]


def test_accuracy_plot_rejects_bad_input():
    with pytest.raises(ValueError, match="fractions in \\[0, 1\\]"):
        plots.plot_accuracy_vs_bits([8, 4], {"direct": [97.0, 95.0]}, 0.98)
    with pytest.raises(ValueError, match="has 1 values, expected 2"):
        plots.plot_accuracy_vs_bits([8, 4], {"direct": [0.9]}, 0.98)
    with pytest.raises(ValueError, match=r"bit widths \[2\]"):
        plots.plot_accuracy_vs_bits([8, 4], {"d": [0.9, 0.8]}, 0.98, reference={"r": {2: 0.5}})
    with pytest.raises(TypeError, match="float_accuracy must be a number"):
        plots.plot_accuracy_vs_bits([8], {"d": [0.9]}, "0.98")
    with pytest.raises(ValueError, match="fractions"):
        plots.plot_accuracy_vs_bits([8], {"d": [0.9]}, 97.76)
    with pytest.raises(ValueError, match="bits_labels must not be empty"):
        plots.plot_accuracy_vs_bits([], {}, 0.9)


# ----------------------------------------------------------------------------- histogram


def test_histogram_counts_every_value_and_draws_each_level():
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    levels = torch.linspace(-2, 2, 9)
    fig = plots.plot_histogram_with_levels(w, levels=levels, title="fc1 weights, 4 bits")
    _renders(fig)
    ax = fig.axes[0]
    assert len(ax.patches) == plots.HISTOGRAM_BINS
    assert sum(p.get_height() for p in ax.patches) == w.numel()
    lows = [p.get_x() for p in ax.patches]
    assert min(lows) == pytest.approx(float(w.min()))
    positions = sorted(line.get_xdata()[0] for line in ax.lines)
    np.testing.assert_allclose(positions, levels.numpy())
    assert ax.get_title() == "fc1 weights, 4 bits"


def test_histogram_without_levels_and_from_numpy():
    fig = plots.plot_histogram_with_levels(np.arange(10.0))
    ax = fig.axes[0]
    assert len(ax.lines) == 0 and ax.get_legend() is None
    assert sum(p.get_height() for p in ax.patches) == 10


def test_histogram_rejects_bad_input():
    with pytest.raises(TypeError, match="w must be a torch.Tensor or numpy.ndarray"):
        plots.plot_histogram_with_levels([1.0, 2.0])
    with pytest.raises(ValueError, match="w must not be empty"):
        plots.plot_histogram_with_levels(torch.zeros(0))
    with pytest.raises(TypeError, match=r"levels\[1\] must be a number"):
        plots.plot_histogram_with_levels(torch.zeros(3), levels=[0.0, "a"])


# ----------------------------------------------------------------------------- bars


def test_bars_draw_one_bar_per_label_with_its_value():
    labels, values = ["fp32", "int8", "binary"], [12.0, 3.0, 0.75]
    fig = plots.plot_bars(labels, values, ylabel="latency (ms)", title="matmul 1024")
    _renders(fig)
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == values
    assert [t.get_text() for t in ax.get_xticklabels()] == labels
    assert ax.get_ylabel() == "latency (ms)" and ax.get_title() == "matmul 1024"
    assert [t.get_text() for t in ax.texts] == ["12", "3", "0.75"]


def test_bars_reject_bad_input():
    with pytest.raises(ValueError, match="same length"):
        plots.plot_bars(["a", "b"], [1.0], "y")
    with pytest.raises(TypeError, match="labels"):
        plots.plot_bars("ab", [1.0, 2.0], "y")
    with pytest.raises(TypeError, match="ylabel must be a str"):
        plots.plot_bars(["a"], [1.0], None)


def test_plot_lines_draws_each_series_against_x():
    x = torch.linspace(0, 1, 5)
    fig = plots.plot_lines(x, {"square": x**2, "flat": [1.0] * 5}, xlabel="x", title="t")
    lines = fig.axes[0].lines
    assert [line.get_label() for line in lines] == ["square", "flat"]
    assert lines[0].get_ydata().tolist() == pytest.approx((x**2).tolist())
    assert fig.axes[0].get_xlabel() == "x" and fig.axes[0].get_title() == "t"
    with pytest.raises(ValueError):
        plots.plot_lines([0, 1], {"a": [1, 2, 3]})
    with pytest.raises(TypeError):
        plots.plot_lines([0, 1], {})


def test_accuracy_vs_portion_draws_one_line_per_label_and_the_float_line():
    fig = plots.plot_accuracy_vs_portion([0.5, 0.75, 1.0], {"5 bits": [0.97, 0.96, 0.96],
                                                            "3 bits": [0.9, 0.8, 0.7]}, 0.975)
    lines = fig.axes[0].lines
    assert [line.get_label() for line in lines] == ["5 bits", "3 bits", "float 97.5%"]
    assert lines[-1].get_linestyle() == ":"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["50 %", "75 %", "100 %"]
    with pytest.raises(ValueError, match="portions"):
        plots.plot_accuracy_vs_portion([0.75, 0.5], {"a": [0.9, 0.9]}, 0.9)
    with pytest.raises(ValueError, match="accuracies"):
        plots.plot_accuracy_vs_portion([0.5], {"a": [90.0]}, 0.9)
    with pytest.raises(ValueError, match="accuracies"):
        plots.plot_accuracy_vs_portion([0.5, 1.0], {"a": [0.9]}, 0.9)


def test_tradeoffs_draw_every_mode_per_model_with_accuracy_intervals():
    from course.measure import accuracy_interval
    from course.plots import plot_tradeoffs

    rows = [{"model": model, "mode": mode, "size vs fp32": size, "speedup vs fp32": speed,
             "accuracy": acc}
            for model in ("mlp", "cnn")
            for mode, size, speed, acc in (("fp32", 1.0, 1.0, 0.96), ("int8", 0.25, 2.5, 0.95))]
    fig = plot_tradeoffs(rows, 1000)
    size_ax, speed_ax, acc_ax = fig.axes
    assert sorted(round(p.get_height(), 3) for p in size_ax.patches) == [0.25, 0.25, 1.0, 1.0]
    assert sorted(round(p.get_height(), 3) for p in speed_ax.patches) == [1.0, 1.0, 2.5, 2.5]
    lo, hi = accuracy_interval(0.95, 1000)
    bars = [(round(float(seg[0][1]), 9), round(float(seg[1][1]), 9))
            for coll in acc_ax.collections for seg in coll.get_segments()]
    assert (round(lo, 9), round(hi, 9)) in bars and len(bars) == 4
    with pytest.raises(ValueError, match=r"rows\[0\]"):
        plot_tradeoffs([{"model": "mlp"}], 1000)
    with pytest.raises(ValueError, match="non-empty"):
        plot_tradeoffs([], 1000)
