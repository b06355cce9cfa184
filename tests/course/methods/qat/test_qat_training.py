"""course.methods.qat.training: QATRecipe's checks and learning rates, train_qat's switches, and
what QAT buys: at 2 bits it beats PTQ (the same modules, calibrated only) on MNIST."""

from __future__ import annotations

import pytest
import torch

from course.data import mnist_loaders
from course.methods.qat import (
    QATRecipe,
    calibrate_qat,
    freeze_bn_stats,
    prepare_qat,
    qat_layers,
    train_qat,
)
from course.models import MLP
from course.nn.fake_quant import fake_quantizers
from course.train import evaluate, trained_model


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def loaders():
    return mnist_loaders()


def test_train_qat_applies_its_switches_and_leaves_eval_mode():
    qat = prepare_qat(MLP().eval(), 4)
    g = _gen(18)
    data = [(torch.rand(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g))
            for _ in range(2)]
    history = train_qat(qat, data, QATRecipe(epochs=2, freeze_observers_epoch=1),
                        progress=False)
    assert history.epochs == 2 and not qat.training
    assert all(layer.bn_frozen for layer in qat_layers(qat) if layer.bn is not None)
    assert not any(fq.observer_enabled for fq in fake_quantizers(qat))
    assert qat.quantize.batches.item() == 2  # observed during epoch 0 only
    assert QATRecipe(lr=1e-3, lr_decay=0.5).lr_at(2) == pytest.approx(2.5e-4)
    with pytest.raises(ValueError, match="epochs"):
        QATRecipe(epochs=0)
    with pytest.raises(ValueError, match="lr_decay"):
        QATRecipe(lr_decay=1.5)
    with pytest.raises(ValueError, match="freeze_bn_epoch"):
        QATRecipe(freeze_bn_epoch=-1)
    with pytest.raises(TypeError, match="recipe"):
        train_qat(qat, data, {"epochs": 1})
    with pytest.raises(ValueError, match="no QAT layer"):
        freeze_bn_stats(MLP())


def test_qat_beats_ptq_at_two_bits(loaders):
    model = trained_model("mlp", progress=False)
    ptq_model = prepare_qat(model, 2, observer="minmax")
    calibrate_qat(ptq_model, loaders.calibration)
    qat = prepare_qat(model, 2)
    calibrate_qat(qat, loaders.calibration)
    train_qat(qat, loaders.train, QATRecipe(epochs=2), progress=False)
    ptq_acc, qat_acc = evaluate(ptq_model, loaders.test), evaluate(qat, loaders.test)
    assert qat_acc >= ptq_acc + 0.03, (ptq_acc, qat_acc)
