"""course.widgets: the landscape explorer builds as a widget whose controls redraw it, and
degrades to a static figure without ipywidgets, without a kernel, or while grading."""

from __future__ import annotations

import sys

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from course import landscape, widgets

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g)
    return model, [(x[:25], y[:25]), (x[25:], y[25:])]


def _explorer(setup, **kw):
    model, loader = setup
    return widgets.landscape_explorer(model, loader, bits=(8, 4, 2), alphas=[0.0, 0.5, 1.0, 1.5],
                                      **kw)


def test_interactive_explorer_redraws_when_the_controls_change(setup):
    pytest.importorskip("ipywidgets")
    model, loader = setup
    ex = _explorer(setup, interactive=True)
    assert ex.interactive and ex.widget is not None
    assert set(ex.controls) == {"bits", "direction"}
    assert ex.bits == 4 and ex.direction == widgets.QUANTIZATION
    first_png, first_label = bytes(ex._image.value), ex._label.value
    assert first_png.startswith(PNG) and "4 bits" in first_label

    ex.controls["bits"].value = 2                # what moving the slider does
    assert ex.bits == 2 and "2 bits" in ex._label.value
    assert bytes(ex._image.value) != first_png
    title = ex.figure.axes[0].get_title()
    assert title.startswith("2 bits: loss")
    # the marked point is the quantized model itself, at alpha = 1, on the curve
    marker = [line for line in ex.figure.axes[0].lines if line.get_linestyle() == "None"][0]
    loss2, _ = landscape.loss_and_accuracy(
        landscape.perturbed(model, landscape.quantization_direction(model, 2), 1.0), loader)
    assert tuple(marker.get_data()[0]) == (1.0,)
    assert marker.get_data()[1][0] == pytest.approx(loss2)
    assert ex.curve(widgets.QUANTIZATION, 2)[2] == pytest.approx(loss2, rel=1e-5)

    ex.controls["direction"].value = "random direction 1"
    assert ex.direction == "random direction 1"
    assert "along the random direction 1" in [t.get_text() for t in
                                              ex.figure.axes[0].get_legend().get_texts()][0]
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["image/png"].startswith(PNG)          # the fallback for static viewers
    with pytest.raises(ValueError, match="bits"):
        ex.update(bits=3)
    with pytest.raises(ValueError, match="direction"):
        ex.update(direction="sideways")


def test_static_explorer_is_one_figure_of_every_bit_width(setup):
    ex = _explorer(setup, interactive=False)
    assert not ex.interactive and ex.widget is None and ex.controls == {}
    assert isinstance(ex.figure, Figure)
    labels = [line.get_label() for line in ex.figure.axes[0].lines]
    for b in (8, 4, 2):
        assert f"{b}-bit step" in labels
    bundle = ex._repr_mimebundle_()
    assert set(bundle) == {"image/png", "text/plain"} and bundle["image/png"].startswith(PNG)
    # the static figure is still a function of the choice: update redraws it
    assert isinstance(ex.update(bits=8), Figure) and ex.bits == 8


def test_widgets_are_off_while_grading_outside_a_kernel_and_without_ipywidgets(setup,
                                                                               monkeypatch):
    assert widgets.widgets_available() is False            # pytest is no Jupyter kernel
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert widgets.widgets_available() is False
    assert _explorer(setup).interactive is False
    monkeypatch.delenv("NBGRADER_EXECUTION")
    monkeypatch.setitem(sys.modules, "ipywidgets", None)   # as if not installed
    assert widgets.widgets_available() is False
    with pytest.raises(ValueError, match="ipywidgets"):
        _explorer(setup, interactive=True)


def test_in_a_kernel_the_explorer_is_interactive_unless_told_otherwise(monkeypatch):
    pytest.importorskip("ipywidgets")

    class Shell:
        kernel = object()

    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    assert widgets.widgets_available() is True
    monkeypatch.setenv(widgets.STATIC_ENV, "1")
    assert widgets.widgets_available() is False


def test_explorer_arguments_are_checked_by_name(setup):
    model, loader = setup
    with pytest.raises(ValueError, match="bits"):
        widgets.landscape_explorer(model, loader, bits=(8, 1), interactive=False)
    with pytest.raises(TypeError, match="interactive"):
        widgets.landscape_explorer(model, loader, interactive="yes")
    with pytest.raises(TypeError, match="model"):
        widgets.landscape_explorer(None, loader, interactive=False)
