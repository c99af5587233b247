"""The masked-lung check (cxrdistill.evaluation.masking): the hidden pixels really are hidden on the model input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cxrdistill.cli import app
from cxrdistill.evaluation.evaluate import load_for_evaluation, predict_records, records_for
from cxrdistill.evaluation.masking import FILL_GREY, LUNG_FIELD, MASKS, masked_model
from cxrdistill.registry import UnknownNameError


def inputs_seen(checkpoint: Path, data: Path, mask: str | None) -> torch.Tensor:
    """Every tensor the network itself received while evaluating ``data`` through the normal path."""
    model, metadata, data_config = load_for_evaluation(checkpoint)
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    records, _ = records_for(data, "test", data_config)
    predict_records(masked_model(model, mask, metadata), metadata, data_config, records, batch_size=8,
                    progress=False)
    return torch.cat(seen)


@pytest.mark.parametrize("mask", ["lungs", "outside-lungs"])
def test_the_masked_pixels_reach_the_model_as_flat_grey_and_the_rest_unchanged(
    small_checkpoint: Path, synth_root: Path, mask: str,
) -> None:
    plain = inputs_seen(small_checkpoint, synth_root, None)
    masked = inputs_seen(small_checkpoint, synth_root, mask)
    hidden = MASKS.get(mask)(*plain.shape[-2:])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1)
    assert torch.allclose(masked[..., hidden], ((FILL_GREY - mean) / std).expand_as(masked[..., hidden]))
    assert torch.equal(masked[..., ~hidden], plain[..., ~hidden])
    assert not torch.allclose(plain[..., hidden], masked[..., hidden])  # the film differed there


def test_the_lung_field_and_its_complement_split_the_image() -> None:
    inside = LUNG_FIELD.inside(100, 100)
    assert inside.float().mean().item() == pytest.approx(0.76**2)
    assert inside[50, 50] and not inside[5, 50] and not inside[50, 95]
    assert torch.equal(MASKS.get("outside-lungs")(100, 100), ~MASKS.get("lungs")(100, 100))


def test_cli_evaluates_with_a_mask_into_its_own_folder(small_checkpoint: Path, synth_root: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(small_checkpoint), "--data", str(synth_root), "--mask",
                                      "lungs", "--bootstrap", "20", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["data"].endswith("(lungs masked)")
    assert (small_checkpoint.parent / f"eval-{synth_root.name}-test-mask-lungs" / "metrics.json").is_file()


def test_an_unknown_mask_is_refused_with_the_known_ones(small_checkpoint: Path) -> None:
    with pytest.raises(UnknownNameError, match="unknown input mask 'heart'; known: lungs, outside-lungs"):
        masked_model(torch.nn.Identity(), "heart", {})
