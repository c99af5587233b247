"""ONNX export verified with real ONNX Runtime, metadata embedded, for plain and SRM front-end models."""

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import tiny_config

from cxrdistill.config import load_config
from cxrdistill.deployment.export import export_onnx
from cxrdistill.runtime.checkpoint import checkpoint_metadata, model_from_checkpoint, save_checkpoint


@pytest.mark.parametrize("frontend", ["none", "srm"])
def test_export_matches_pytorch_in_onnx_runtime(tmp_path, frontend):
    config = load_config(None, ["model.name=resnet18", f"model.frontend={frontend}"])
    from cxrdistill.models import create_model

    model = create_model(config.model, image_size=48)
    checkpoint = save_checkpoint(tmp_path / "model.pt", model, checkpoint_metadata(config, 48))
    result = export_onnx(checkpoint, tmp_path / "model.onnx")
    assert result.max_abs_difference < 1e-3 and result.size_mb > 1
    graph = onnx.load(result.path)
    metadata = {p.key: json.loads(p.value) for p in graph.metadata_props}
    assert metadata["class_names"] == ["NORMAL", "PNEUMONIA"] and metadata["input_size"] == 48
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(1).standard_normal((3, 3, 48, 48)).astype(np.float32)
    reloaded, _ = model_from_checkpoint(checkpoint)
    with torch.no_grad():
        expected = reloaded.eval()(torch.from_numpy(batch)).numpy()
    assert np.allclose(session.run(None, {"image": batch})[0], expected, atol=1e-3)  # dynamic batch size


@pytest.mark.slow
def test_export_of_a_trained_run(synth_root, tmp_path):
    from cxrdistill.experiments.run import run_experiment

    best = run_experiment(tiny_config(synth_root, tmp_path, "train.epochs=1"), progress=False).best_checkpoint
    assert export_onnx(best, tmp_path / "student.onnx").path.is_file()


def test_predict_files_with_checkpoint_and_onnx_agree(tmp_path, synth_root):
    from cxrdistill.deployment.predict import predict_files
    from cxrdistill.models import create_model

    config = load_config(None, ["model.name=resnet18"])
    checkpoint = save_checkpoint(tmp_path / "m.pt", create_model(config.model, image_size=40),
                                 checkpoint_metadata(config, 40))
    onnx_path = export_onnx(checkpoint, tmp_path / "m.onnx").path
    files = sorted((synth_root / "test").rglob("*.jpeg"))[:5]
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"\xff\xd8 not really")
    from_torch = predict_files(checkpoint, [*files, broken], batch_size=2)
    from_onnx = predict_files(onnx_path, [*files, broken], batch_size=4)
    assert [r.file for r in from_torch] == [str(f) for f in [*files, broken]]
    for a, b in zip(from_torch[:-1], from_onnx[:-1], strict=True):
        assert a.prob_pneumonia == pytest.approx(b.prob_pneumonia, abs=1e-4) and a.predicted == b.predicted
        assert a.predicted == ("PNEUMONIA" if a.prob_pneumonia >= 0.5 else "NORMAL")
    assert from_torch[-1].error and from_onnx[-1].prob_pneumonia is None


@pytest.mark.parametrize(("size_in", "size_out"), [((2, 2), (6, 6)), ((5, 3), (6, 6)), ((7, 9), (3, 4))])
def test_fixed_adaptive_pooling_matches_pytorch(size_in, size_out):
    from cxrdistill.deployment.export import FixedAdaptiveAvgPool2d

    x = torch.randn(2, 4, *size_in)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, size_out)
    assert torch.allclose(FixedAdaptiveAvgPool2d(size_in, size_out)(x), expected, atol=1e-6)


@pytest.mark.slow  # a full-size AlexNet (61 M parameters) through the ONNX exporter: ~10 s
def test_alexnet_below_224_px_exports(tmp_path):
    """Its feature map (2x2 at 96 px) is pooled up to 6x6, which the ONNX exporter alone refuses."""
    from cxrdistill.models import create_model

    config = load_config(None, ["model.name=alexnet"])
    checkpoint = save_checkpoint(tmp_path / "a.pt", create_model(config.model, image_size=96),
                                 checkpoint_metadata(config, 96))
    assert export_onnx(checkpoint, tmp_path / "a.onnx").max_abs_difference < 1e-3
