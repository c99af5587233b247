"""Slim students for weak hardware (MobileNetV3-Small; ResNet18 is the other): built from the registry, trained
and distilled from a tiny teacher like the paper's models, and their CPU presets load."""

import pytest
import torch
from conftest import tiny_config

from cxrdistill.config import ModelConfig, preset
from cxrdistill.experiments.run import run_experiment
from cxrdistill.models import create_model, model_spec
from cxrdistill.models.summary import summarize
from cxrdistill.runtime.checkpoint import load_checkpoint, model_from_checkpoint


def test_mobilenet_is_registered_small_and_takes_grey_replicated_input():
    spec = model_spec("mobilenet_v3_small")
    assert spec.weights_enum == "MobileNet_V3_Small_Weights"
    summary = summarize(ModelConfig(name="mobilenet_v3_small"), 96)
    assert summary.params_m < 2
    assert summarize(ModelConfig(name="alexnet"), 96).params_m > 25 * summary.params_m
    model = create_model(ModelConfig(name="mobilenet_v3_small", dropout=0.3), image_size=32)
    assert model.classifier[3].out_features == 2 and model.classifier[2].p == 0.3
    grey = torch.rand(2, 1, 32, 32).expand(2, 3, 32, 32)  # what to_model_input feeds every model
    with torch.no_grad():
        assert model.eval()(grey).shape == (2, 2)


def test_slim_presets_match_the_robust_student_recipe():
    slim, robust = preset("cpu/slim/student"), preset("cpu/robust/student")
    assert slim.model.name == "mobilenet_v3_small" and slim.data.image_size == 96 and slim.model.init == "scratch"
    assert (slim.data, slim.train.lr, slim.train.schedule) == (robust.data, robust.train.lr, robust.train.schedule)
    assert slim.train.ema_decay is None  # measured: the weight average broke this model (see the config)
    assert preset("cpu/slim/student_kd").distill.teacher is not None


@pytest.mark.slow
def test_slim_student_trains_and_is_distilled_from_a_tiny_teacher(synth_root, tmp_path):
    teacher = run_experiment(tiny_config(synth_root, tmp_path, "name=teacher", "train.epochs=1"),
                             progress=False).final_checkpoint
    student = run_experiment(tiny_config(synth_root, tmp_path, "name=slim", "model.name=mobilenet_v3_small",
                                         "train.epochs=1", f"distill.teacher={teacher}"), progress=False)
    metadata = load_checkpoint(student.final_checkpoint)["metadata"]
    assert metadata["architecture"] == "mobilenet_v3_small" and metadata["config"]["distill"]["teacher"] == str(teacher)
    model, _ = model_from_checkpoint(student.final_checkpoint)
    with torch.no_grad():
        logits = model.eval()(torch.randn(3, 3, 32, 32))
    assert torch.isfinite(logits).all() and logits.shape == (3, 2)
