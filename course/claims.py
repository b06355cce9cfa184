"""The lecture's claims beside what this machine measured: the table of ``make results``
(``python -m course.claims [labs folder]``).

Each :class:`Claim` names the lab that tests it, the claim as the lecture states it (with its
source), and how to read the measurement from the lab's ``results.json``. A lab that has not
been run yet, or a results file from an older version of a lab, gives "not measured yet".

>>> rows = claim_rows({"lab01_direct_quantization": {"sqnr_db_per_bit": {"g": 6.28}}})
>>> rows[0]["measured here"]
'6.28 dB per bit (fitted, 4-8 bits; g)'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOT_MEASURED = "not measured yet (run the lab)"
LECTURE = "lecture"


@dataclass(frozen=True)
class Claim:
    """A claim of the lecture and how its lab's results show the measured counterpart;
    ``agrees`` (when given) says whether the measurement supports the claim."""

    lab: str
    claim: str
    source: str
    measured: Callable[[dict], str]
    agrees: Callable[[dict], bool] | None = None


def _hands_on(r: dict) -> str:
    d = r["direct_quantization"]
    h = d["hands_on_1bit"]
    deck, ours = (h[k] for k in ("deck's network, the hands-on's W1/A1 (unscaled +-1, "
                                 "binarized inputs)", "course MLP, per-channel alpha * sign(w) "
                                 "weights"))
    return (f"{_pct(deck)} in the hands-on's configuration (the deck's network, W1/A1: "
            f"unscaled +-1 weights, binarized inputs, no retraining; {d['test_images']} test "
            f"images); a better direct quantizer, per-channel alpha * sign(w), gives "
            f"{_pct(ours)}")


def _near_chance_collapse(r: dict) -> bool:
    """The hands-on's 1-bit figure within 10 points of the deck's 51.78 %."""
    h = r["direct_quantization"]["hands_on_1bit"]
    return abs(h["deck's network, the hands-on's W1/A1 (unscaled +-1, binarized inputs)"]
               - 0.5178) <= 0.10


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _sqnr(r: dict) -> str:
    return "; ".join(f"{v:.2f} dB per bit (fitted, 4-8 bits; {k})"
                     for k, v in r["sqnr_db_per_bit"].items())


def _direct(r: dict, index: int, key: str = "per channel") -> str:
    d = r["direct_quantization"]
    return f"{_pct(d[key][index])} at {d['bits'][index]} bit (float {_pct(d['float'])})"


def _ptq(r: dict, mode: str) -> str:
    rows = [row for row in r["ptq_table"] if row["mode"] == mode]
    return "; ".join(f"{row['model']}: {1 / row['size vs fp32']:.2f}x smaller, "
                     f"{row['speedup vs fp32']:.2f}x speed, {_pct(row['accuracy'])}"
                     for row in rows)


def _qat(r: dict) -> str:
    out = []
    for row in r["ptq_vs_qat"]:
        if row["bits"] in (4, 2):
            out.append(f"{row['model']} {row['bits']} bits: PTQ {_pct(row['PTQ'])}, "
                       f"QAT {_pct(row['QAT'])} (float {_pct(row['float'])})")
    return "; ".join(out)


def _landscape(r: dict) -> str:
    curves = r["curves"]
    alphas = curves["alphas"]
    out = []
    for model in ("mlp", "cnn"):
        line = curves[model]["random 1"]
        small, one = (min(range(len(alphas)), key=lambda i, t=t: abs(alphas[i] - t))
                      for t in (0.2, 1.0))
        out.append(f"{model}: loss {line[alphas.index(0.0)]:.3g} at the minimum, "
                   f"{line[small]:.3g} at alpha = {alphas[small]:g}, {line[one]:.3g} at alpha "
                   f"= {alphas[one]:g} (random filter-normalized direction)")
    return "; ".join(out)


def _steps(r: dict) -> str:
    out = []
    for model in ("mlp", "cnn"):
        rows = [row for row in r["quantization_steps"] if row["model"] == model]
        losses = ", ".join(f"{row['bits']} bits {row['loss at 1 (quantized)']:.3g}"
                           for row in rows)
        out.append(f"{model}: float {rows[0]['loss at 0 (float)']:.3g}, {losses}")
    return "; ".join(out)


def _sharpness(r: dict) -> str:
    rows = [f"batch {row['batch size']}: lambda_max {row['lambda_max']:.3g}, 3 bits "
            f"{100 * row['3-bit accuracy drop']:+.2f} points lost, loss "
            f"{row['3-bit loss increase']:+.3g}" for row in r["sharp_vs_flat"]]
    verdict = "yes" if r["sharper_loses_more_at_3_bits"] else "no"
    return "; ".join(rows) + f"; sharper lost more at 3 bits: {verdict}"


def _inq_5bit(r: dict) -> str:
    return "; ".join(f"{row['network']}: float {row['float top-1 error %']:.2f} % error, INQ "
                     f"5-bit {row['INQ 5-bit top-1 error %']:.2f} %"
                     for row in r["paper_5bit"]["ours"])


def _inq_partition(r: dict) -> str:
    p = r["partition"]
    return (f"{p['model']} at {p['bits']} bits: largest first {_pct(p['pruning'])}, random "
            f"{_pct(p['random'])} ({100 * (p['pruning'] - p['random']):+.2f} points)")


def _inq_storage(r: dict) -> str:
    return "; ".join(f"{row['model']} {row['bits']} bits: {1 / row['size vs fp32']:.1f}x smaller "
                     f"({row['stored bytes']} of {row['fp32 bytes']} bytes)"
                     for row in r["storage"] if row["bits"] == 5)


INQ_PAPER = "Zhou et al., INQ, ICLR 2017"
XNOR_PAPER = "Rastegari et al., XNOR-Net, ECCV 2016 (AlexNet, ImageNet top-1)"


def _xnor_rows(r: dict) -> dict[tuple[str, str], dict]:
    return {(row["model"], row["variant"]): row for row in r["xnor_table"]}


def _xnor_memory(r: dict) -> str:
    layers = r["xnor_packed_layers"]
    ratio = (sum(x["fp32 weight bytes"] for x in layers)
             / sum(x["packed weight bytes"] + x["alpha bytes"] for x in layers))
    rows = _xnor_rows(r)
    xnor = "binary weights and inputs (XNOR)"
    whole = "; ".join(f"{m}: whole model {1 / rows[m, xnor]['size vs fp32']:.1f}x"
                      for m in ("mlp", "cnn"))
    speed = "; ".join(f"{row['operation']}: {row['speedup']:.1f}x fp32"
                      for row in r["kernel_speed"])
    return (f"binary layers {ratio:.1f}x smaller; whole models (batch norm and the first layer's "
            f"input float): {whole}; packed kernels: {speed}")


def _xnor_accuracy(r: dict) -> str:
    rows = _xnor_rows(r)
    out = []
    for m in ("mlp", "cnn"):
        float_, bwn, xnor = (rows[m, v]["accuracy fine-tuned"] for v in (
            "float", "binary weights (BWN)", "binary weights and inputs (XNOR)"))
        out.append(f"{m}: float {_pct(float_)}, BWN {_pct(bwn)}, XNOR {_pct(xnor)}")
    return "; ".join(out) + " (embedded MNIST, fine-tuned)"


def _xnor_order(r: dict) -> bool:
    """BWN close to float and XNOR below BWN, as in the paper."""
    rows = _xnor_rows(r)
    return all(rows[m, "binary weights (BWN)"]["accuracy fine-tuned"]
               >= rows[m, "float"]["accuracy fine-tuned"] - 0.02
               and rows[m, "binary weights and inputs (XNOR)"]["accuracy fine-tuned"]
               <= rows[m, "binary weights (BWN)"]["accuracy fine-tuned"]
               for m in ("mlp", "cnn"))


def _bwn_speed(r: dict) -> str:
    rows = _xnor_rows(r)
    bwn, xnor = "binary weights (BWN)", "binary weights and inputs (XNOR)"
    return "; ".join(f"{m}: BWN model {rows[m, bwn]['speedup vs fp32']:.2f}x, XNOR model "
                     f"{rows[m, xnor]['speedup vs fp32']:.2f}x fp32 (1,000 digits, this CPU)"
                     for m in ("mlp", "cnn"))


def _dorefa(r: dict) -> str:
    return "; ".join(f"W{row['W']}/A{row['A']}/G{row['G']}: {_pct(row['accuracy fine-tuned'])}"
                     for row in r["dorefa_table"])


def _hands_on_qat(r: dict) -> str:
    h = r["hands_on"]
    return (f"{_pct(h['faithful']['QAT'])} trained from scratch for {h['faithful_epochs']} "
            f"epochs in the hands-on's configuration (W1/A1, unscaled weights, binarized "
            f"image; direct {_pct(h['faithful']['direct'])}); scaled 1-bit weights, fine-tuned: "
            f"{_pct(h['ours']['QAT'])} (3,500 training images)")


def _qat_8bit(r: dict) -> str:
    out = []
    for row in r["ptq_vs_qat"]:
        if row["bits"] == 8:
            delta = 100 * (row["QAT"] - row["PTQ"]) / row["PTQ"]
            out.append(f"{row['model']}: PTQ {_pct(row['PTQ'])}, QAT {_pct(row['QAT'])} "
                       f"({delta:+.2f} % relative)")
    return "; ".join(out) + " (1,000 test images: +-1.3 points is noise)"


def _sizes(r: dict, names: tuple[str, ...]) -> str:
    rows = {row["model"]: row for row in r["size_table"]}
    return "; ".join(f"{n}: {rows[n]['MiB fp32']:.1f} MiB of fp32 parameters, "
                     f"{rows[n]['GMACs']:.2f} GMACs" for n in names)


def _int8_ratio(r: dict) -> str:
    ratios = [row["MiB fp32"] / row["MiB int8"] for row in r["size_table"]]
    return f"{min(ratios):.2f}x to {max(ratios):.2f}x smaller (int8 weights; biases, BN fp32)"


def _memory_share(r: dict) -> str:
    shares = "; ".join(f"{row['model']} {_pct(row['memory share'])}" for row in r["energy"]
                       if row["format"] == "fp32"
                       and row["model"] in ("alexnet", "resnet50", "squeezenet1_0"))
    return "DRAM share of the fp32 energy of one image: " + shares


def _latency(r: dict) -> str:
    return "; ".join(f"batch {row['batch']} {row['format']} {row['speedup vs fp32']:.2f}x"
                     for row in r["latency"]["rows"] if row["format"] != "fp32")


CLAIMS: tuple[Claim, ...] = (
    Claim("lab01_direct_quantization", "each extra bit adds about 6 dB of SQNR",
          "uniform quantization theory (10 log10 4 = 6.02 dB)", _sqnr),
    Claim("lab01_direct_quantization", "float MLP 784-512-64-10: 97.76 %",
          LECTURE + ", hands-on (full MNIST, TF + Larq)",
          lambda r: f"{_pct(r['direct_quantization']['float'])} (embedded MNIST, 3,500 "
                    "training images)"),
    Claim("lab01_direct_quantization", "directly binarized (1-bit) MLP: 51.78 %",
          LECTURE + ", hands-on (TF + Larq, DoReFa k_bit=1 on kernels and inputs)", _hands_on,
          _near_chance_collapse),
    Claim("lab02_post_training_quantization", "dynamic range int8: 4x smaller, 2-3x speedup",
          LECTURE, lambda r: _ptq(r, "dynamic range int8")),
    Claim("lab02_post_training_quantization", "full integer int8: 4x smaller, 3x+ speedup",
          LECTURE, lambda r: _ptq(r, "full integer int8")),
    Claim("lab02_post_training_quantization",
          "float16: 2x smaller, GPU acceleration (a CPU gives no speedup)",
          LECTURE, lambda r: _ptq(r, "float16")),
    Claim("lab03_quantization_aware_training",
          "QAT typically gives higher accuracy than PTQ, close to float", LECTURE, _qat),
    Claim("lab03_quantization_aware_training",
          "8-bit QAT vs PTQ: a small relative change (the deck's PTQ-vs-QAT table)",
          LECTURE, _qat_8bit),
    Claim("lab04_binary_and_low_bit", "XNOR-Net: ~32x less memory, ~58x faster convolutions",
          XNOR_PAPER + "; 58x counts operations", _xnor_memory),
    Claim("lab04_binary_and_low_bit",
          "XNOR-Net accuracy: float 56.7 %, BWN 56.8 %, XNOR 44.2 %", XNOR_PAPER,
          _xnor_accuracy, _xnor_order),
    Claim("lab04_binary_and_low_bit", "binary weights only (BWN): ~2x faster (adds, no "
          "multiplies)", XNOR_PAPER, _bwn_speed),
    Claim("lab04_binary_and_low_bit", "DoReFa-Net: low-bit weights and activations train to "
          "near float", "Zhou et al., DoReFa-Net, 2016", _dorefa),
    Claim("lab04_binary_and_low_bit", "the hands-on's 1-bit MLP after QAT: 95.22 %",
          LECTURE + ", hands-on (TF + Larq, 20 epochs, full MNIST)", _hands_on_qat),
    Claim("lab06_dangers_of_quantization",
          "a small change of the weights can change the loss enormously",
          LECTURE + " (ResNet-56 landscape of Li et al., 2018)", _landscape),
    Claim("lab06_dangers_of_quantization",
          "the landscape is flat at mild bit widths, steep at 4 bits and below",
          "LAPQ (Nahshan et al., 2019)", _steps),
    Claim("lab06_dangers_of_quantization", "flatter minima quantize better",
          "Keskar et al. 2017; HAWQ (Dong et al., 2019)", _sharpness),
    Claim("lab05_incremental_network_quantization",
          "INQ at 5 bits matches or beats float (top-1 error, e.g. ResNet-18 31.73 -> 31.02 %)",
          INQ_PAPER + ", Table 1 (ImageNet)", _inq_5bit),
    Claim("lab05_incremental_network_quantization",
          "the pruning-inspired partition beats a random one (about 0.8 points, ResNet-18)",
          INQ_PAPER + " (ImageNet)", _inq_partition),
    Claim("lab05_incremental_network_quantization",
          "5-bit weights: 0 or ±2^n, stored in 5 bits instead of 32", INQ_PAPER,
          _inq_storage),
    Claim("lab00_why_quantize", "AlexNet 233 MB", LECTURE + " (model-size table: its MB are "
          "MiB, its GFLOPS are GMACs)", lambda r: _sizes(r, ("alexnet", "vgg16"))),
    Claim("lab00_why_quantize", "MobileNet 38 MB, SqueezeNet 30 MB, Inception-v3 89 MB",
          LECTURE + " (convnet-burden's feature memory, not parameters)",
          lambda r: _sizes(r, ("mobilenet_v2", "squeezenet1_0", "inception_v3"))),
    Claim("lab00_why_quantize", "int8 weights: 4x smaller", LECTURE, _int8_ratio),
    Claim("lab00_why_quantize", "a 32-bit DRAM access (640 pJ) costs far more than an fp32 "
          "multiply (3.7 pJ)", "Horowitz, ISSCC 2014; Han et al. 2015, Fig. 1", _memory_share),
    Claim("lab00_why_quantize", "int8 and binary matrix products are faster than fp32",
          LECTURE + " (latency comparison)", _latency),
)


def load_results(labs_dir: str | Path) -> dict[str, dict]:
    """``{lab: results}`` from every ``<labs_dir>/<lab>/results.json`` that exists."""
    folder = Path(labs_dir)
    if not folder.is_dir():
        raise ValueError(f"labs_dir: no such folder {folder}")
    out = {}
    for path in sorted(folder.glob("*/results.json")):
        try:
            out[path.parent.name] = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON ({err})") from err
    return out


def claim_rows(results: Mapping[str, Any], claims: tuple[Claim, ...] = CLAIMS) -> list[dict]:
    """One row per claim: lab, claim, source, measured here, agrees ('yes', 'no', or '' when
    the claim has no test or was not measured)."""
    rows = []
    for c in claims:
        data = results.get(c.lab)
        agrees = ""
        try:
            measured = NOT_MEASURED if data is None else c.measured(data)
            if data is not None and c.agrees is not None:
                agrees = "yes" if c.agrees(data) else "no"
        except (KeyError, IndexError, TypeError, ZeroDivisionError):
            measured = "not in this results.json (re-run the lab)"
        rows.append({"lab": c.lab, "claim": c.claim, "source": c.source,
                     "measured here": measured, "agrees": agrees})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the claims table for the labs folder given (default ``labs``)."""
    import sys

    from course.tables import markdown_table

    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0]) if args else Path("labs")
    print(markdown_table(claim_rows(load_results(folder))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
