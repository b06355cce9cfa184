"""Interactive explorers for the labs (ipywidgets), each with a static fallback.

:func:`landscape_explorer` shows where the quantized model lands on the loss landscape: a
bit-width slider and a direction choice (the quantization step itself, or a random
filter-normalized direction); each change redraws the loss curve and marks the quantized
point with its loss and accuracy.

Where widgets cannot run — ipywidgets missing, no Jupyter kernel (a script), while grading
(``course.grading.grading()``) or when ``COURSE_STATIC_WIDGETS`` is set — the explorer is
static: a figure of every bit width's curve, and the same object to display. An interactive
explorer also carries a PNG of its current figure in its display data, so a notebook viewer
without a widget manager (nbconvert's HTML, a repository page) shows a figure instead of
nothing.

>>> from torch import nn
>>> from torch.utils.data import DataLoader, TensorDataset
>>> data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randint(0, 3, (32,))), 16)
>>> ex = landscape_explorer(nn.Sequential(nn.Linear(4, 3)), data, bits=(8, 2),
...                         alphas=[0.0, 0.5, 1.0], interactive=False)
>>> ex.interactive, sorted(ex.quantized)
(False, [2, 8])
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from course import landscape, plots
from course.grading import grading
from course.quant.checks import check_int, check_module

STATIC_ENV = "COURSE_STATIC_WIDGETS"
"""Set (to anything) to make every explorer static."""

QUANTIZATION = "quantization step"
"""The name of the direction from the float model to the quantized one."""

DEFAULT_BITS = (8, 6, 4, 3, 2)
DEFAULT_ALPHAS = tuple(round(-0.5 + 0.05 * i, 10) for i in range(41))
"""-0.5 to 1.5 by 0.05: alpha = 1 is the quantized model; beyond it, the slope."""


def widgets_available() -> bool:
    """Whether an explorer can be interactive here (see the module doc)."""
    if grading() or os.environ.get(STATIC_ENV):
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


class LandscapeExplorer:
    """What :func:`landscape_explorer` returns: display it (last expression of a cell).

    Attributes: ``bits`` and ``direction`` (the current choice), ``figure`` (the current
    matplotlib figure), ``quantized`` (bits -> (loss, accuracy) of the quantized model),
    ``float_point`` ((loss, accuracy) of the float model), ``widget`` (the ipywidgets box,
    or None when static) and ``controls`` (its ``"bits"`` slider and ``"direction"``
    buttons). :meth:`update` is the callback the controls call.
    """

    def __init__(self, model: nn.Module, loader: Any, bits: Sequence[int],
                 alphas: Sequence[float], random_directions: int, seed: int,
                 interactive: bool) -> None:
        self.model, self.loader = model, loader
        self.bit_widths = tuple(sorted({int(b) for b in bits}, reverse=True))
        self.alphas = list(alphas)
        generator = torch.Generator().manual_seed(seed)
        self.random = {f"random direction {i + 1}":
                       landscape.filter_normalized_direction(model, generator)
                       for i in range(random_directions)}
        self.steps = {b: landscape.quantization_direction(model, b) for b in self.bit_widths}
        self.float_point = landscape.loss_and_accuracy(model, loader)
        self.quantized = {b: landscape.loss_and_accuracy(
            landscape.perturbed(model, self.steps[b], 1.0), loader) for b in self.bit_widths}
        self._curves: dict[tuple[str, int | None], list[float]] = {}
        self.bits = 4 if 4 in self.bit_widths else self.bit_widths[-1]
        self.direction = QUANTIZATION
        self.interactive = interactive
        self.widget, self.controls, self._image, self._label = None, {}, None, None
        self.figure = self.draw() if interactive else self.static_figure()
        if interactive:
            self._build_widget()

    # ------------------------------------------------------------------ data
    @property
    def directions(self) -> list[str]:
        """The direction choices: the quantization step, then the random directions."""
        return [QUANTIZATION, *self.random]

    def curve(self, direction: str, bits: int) -> list[float]:
        """The loss along ``direction`` at ``self.alphas`` (computed once, then cached)."""
        key = (direction, bits if direction == QUANTIZATION else None)
        if key not in self._curves:
            d = self.steps[bits] if direction == QUANTIZATION else self.random[direction]
            self._curves[key] = landscape.loss_curve(self.model, d, self.alphas, self.loader)
        return self._curves[key]

    def summary(self) -> str:
        """One line on the current bit width: the quantized model against the float one."""
        loss, accuracy = self.quantized[self.bits]
        float_loss, float_accuracy = self.float_point
        return (f"{self.bits} bits: loss {loss:.4g} (float {float_loss:.4g}), accuracy "
                f"{100 * accuracy:.2f} % (float {100 * float_accuracy:.2f} %)")

    # ------------------------------------------------------------------ figures
    def draw(self) -> Figure:
        """The figure of the current choice: the curve and the quantized point.

        Along the quantization step the point is the curve at alpha = 1. Along a random
        direction the quantized model is (almost) never on the line: it is marked at the
        alpha of its projection onto the line, at its true loss.
        """
        curve = self.curve(self.direction, self.bits)
        loss, accuracy = self.quantized[self.bits]
        if self.direction == QUANTIZATION:
            alpha, where = 1.0, "alpha = 1"
        else:
            d, step = self.random[self.direction], self.steps[self.bits]
            keys = list(d)
            flat_d = torch.cat([d[k].reshape(-1).double() for k in keys])
            flat_q = torch.cat([step[k].reshape(-1).double() for k in keys])
            alpha = float(flat_q @ flat_d / (flat_d @ flat_d))
            where = f"projected: alpha = {alpha:.2g}"
        label = f"{self.bits}-bit model ({where}): {100 * accuracy:.1f} %"
        return plots.plot_loss_curves(
            self.alphas, {f"along the {self.direction}": curve}, marks={label: (alpha, loss)},
            title=f"{self.summary()}")

    def static_figure(self) -> Figure:
        """Every bit width's quantization step on one figure, each quantized point marked."""
        curves = {f"{b}-bit step": self.curve(QUANTIZATION, b) for b in self.bit_widths}
        for name in self.random:
            curves[name] = self.curve(name, self.bit_widths[0])
        marks = {f"{b} bits: {100 * self.quantized[b][1]:.1f} %": (1.0, self.quantized[b][0])
                 for b in self.bit_widths}
        float_loss, float_accuracy = self.float_point
        return plots.plot_loss_curves(
            self.alphas, curves, marks=marks,
            title=f"loss from the float model (alpha = 0, {100 * float_accuracy:.1f} %) to "
                  "each quantized model (alpha = 1)")

    # ------------------------------------------------------------------ widget
    def _build_widget(self) -> None:
        import ipywidgets as w

        slider = w.SelectionSlider(options=list(reversed(self.bit_widths)), value=self.bits,
                                   description="bits", continuous_update=False)
        buttons = w.ToggleButtons(options=self.directions, value=self.direction,
                                  description="direction")
        self._image = w.Image(value=_png(self.figure), format="png")
        self._label = w.HTML(value=self.summary())
        slider.observe(lambda change: self.update(bits=change["new"]), names="value")
        buttons.observe(lambda change: self.update(direction=change["new"]), names="value")
        self.controls = {"bits": slider, "direction": buttons}
        self.widget = w.VBox([w.HBox([slider, buttons]), self._label, self._image])

    def update(self, bits: int | None = None, direction: str | None = None) -> Figure:
        """Choose a bit width and/or a direction; redraw; return the new figure."""
        if bits is not None:
            if bits not in self.bit_widths:
                raise ValueError(f"bits must be one of {list(self.bit_widths)}, got {bits!r}")
            self.bits = bits
        if direction is not None:
            if direction not in self.directions:
                raise ValueError(f"direction must be one of {self.directions}, "
                                 f"got {direction!r}")
            self.direction = direction
        self.figure = self.draw()
        if self._image is not None:
            self._image.value = _png(self.figure)
            self._label.value = self.summary()
        return self.figure

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        data = {"image/png": _png(self.figure), "text/plain": f"<{self.summary()}>"}
        if self.widget is not None:
            bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude)
            if isinstance(bundle, tuple):
                bundle = bundle[0]
            data.update({k: v for k, v in (bundle or {}).items() if k != "text/plain"})
        return data


def landscape_explorer(model: nn.Module, loader: Any, bits: Sequence[int] = DEFAULT_BITS,
                       alphas: Sequence[float] = DEFAULT_ALPHAS, random_directions: int = 1,
                       seed: int = 0, interactive: bool | None = None) -> LandscapeExplorer:
    """An explorer of where ``model``'s quantized versions land on its loss landscape.

    ``loader`` yields the ``(x, y)`` batches the losses are measured on (a small evaluation
    set keeps it responsive); ``bits``: the bit widths of the slider (at least 2 each);
    ``alphas``: the points of each curve; ``random_directions``: how many filter-normalized
    random directions to offer, drawn from ``torch.Generator().manual_seed(seed)``;
    ``interactive``: None chooses with :func:`widgets_available`, True needs ipywidgets.
    The model is not modified.
    """
    check_module(model)
    if isinstance(bits, (str, bytes)) or not isinstance(bits, Sequence) or not bits:
        raise TypeError("bits must be a non-empty sequence of ints")
    for b in bits:
        check_int(b, "bits", 2)
    alphas = landscape.check_alphas(alphas)
    check_int(random_directions, "random_directions", 0)
    check_int(seed, "seed", 0)
    if interactive is None:
        interactive = widgets_available()
    elif not isinstance(interactive, bool):
        raise TypeError(f"interactive must be a bool or None, got {type(interactive).__name__}")
    elif interactive:
        try:
            import ipywidgets  # noqa: F401
        except ImportError as err:
            raise ValueError("interactive=True needs ipywidgets (pip install ipywidgets)") \
                from err
    return LandscapeExplorer(model, loader, bits, alphas, random_directions, seed, interactive)


__all__ = ["LandscapeExplorer", "QUANTIZATION", "STATIC_ENV", "landscape_explorer",
           "widgets_available"]
