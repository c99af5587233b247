"""The X-ray Dataset and the loaders built from a DataConfig (cxrdistill.data.dataset)."""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch

import cxrdistill.data.preprocess as preprocess_module
from cxrdistill.config import DataConfig
from cxrdistill.data.dataset import augment_settings, build_loaders
from cxrdistill.data.io import load_for_model
from cxrdistill.data.layout import CLASS_NAMES, scan_dataset
from cxrdistill.data.transforms import to_model_input

SIZE = 64


def _config(root: Path, cache: Path, **changes) -> DataConfig:
    settings = {"root": str(root), "cache_dir": str(cache), "batch_size": 8, "num_workers": 0,
                "val_fraction": 0.2, "test_fraction": 0.2, **changes}
    return DataConfig(**settings)


def _build(root: Path, cache: Path, balance_sampler: bool = False, **changes):
    return build_loaders(_config(root, cache, **changes), root, image_size=SIZE, seed=0,
                         balance_sampler=balance_sampler, progress=False)


@pytest.fixture(scope="module")
def bundle(synth_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Loaders with augmentation on (the training default), built once for the read-only tests."""
    return _build(synth_root, tmp_path_factory.mktemp("cache"))


def test_loaders_for_train_val_and_test(bundle, synth_root: Path) -> None:
    assert set(bundle.loaders) == set(bundle.datasets) == {"train", "val", "test"}
    total = sum(len(d) for d in bundle.datasets.values())
    assert total == sum(len(r) for r in scan_dataset(synth_root).values())
    for name, loader in bundle.loaders.items():
        batch = next(iter(loader))
        size = min(8, len(bundle.datasets[name]))
        assert batch["image"].shape == (size, 3, SIZE, SIZE)
        assert batch["image"].dtype == torch.float32
        assert batch["label"].dtype == torch.int64 and batch["label"].shape == (size,)
        assert set(batch["label"].tolist()) <= {0, 1}
        assert len(batch["key"]) == size
    assert bundle.class_counts() == [bundle.datasets["train"].totals()[c] for c in CLASS_NAMES]


def test_keys_are_sha256_of_the_file_bytes(bundle) -> None:
    dataset = bundle.datasets["val"]
    batch = next(iter(bundle.loaders["val"]))  # not shuffled: the first records in order
    for i, key in enumerate(batch["key"]):
        record = dataset.records[i]
        assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)
        assert key == hashlib.sha256(record.path.read_bytes()).hexdigest()
        assert batch["label"][i].item() == record.label


def test_samples_match_the_decoded_file(bundle) -> None:
    dataset = bundle.datasets["test"]  # evaluation splits are never augmented
    for i in (0, len(dataset) - 1):
        pixels = torch.tensor(load_for_model(dataset.records[i].path, SIZE))
        expected = to_model_input(pixels.unsqueeze(0))
        torch.testing.assert_close(dataset[i]["image"], expected)


def test_splits_follow_the_split_file_and_are_patient_disjoint(bundle, synth_root: Path) -> None:
    patients = {name: {r.patient for r in d.records} for name, d in bundle.datasets.items()}
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert {r.path for r in bundle.datasets["test"].records} == {r.path for r in scan_dataset(synth_root)["test"]}


def test_augmentation_off_is_repeatable_and_on_is_random(bundle, synth_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    augmented = bundle.datasets["train"]
    assert not torch.equal(augmented[0]["image"], augmented[0]["image"])

    plain = _build(synth_root, tmp_path, augment=False).datasets["train"]
    assert plain.records == augmented.records
    first, second = plain[0]["image"], plain[0]["image"]
    assert torch.equal(first, second)
    assert first.shape == augmented[0]["image"].shape == (3, SIZE, SIZE)


def test_max_per_class_caps_training_images(synth_root: Path, tmp_path: Path) -> None:
    full = _build(synth_root, tmp_path / "a").datasets
    capped = _build(synth_root, tmp_path / "b", max_per_class=3).datasets

    assert all(n > 3 for n in full["train"].totals().values())
    assert capped["train"].totals() == {"NORMAL": 3, "PNEUMONIA": 3}
    assert {r.path for r in capped["train"].records} <= {r.path for r in full["train"].records}
    for name in ("val", "test"):  # evaluation splits are never capped
        assert capped[name].records == full[name].records
    again = _build(synth_root, tmp_path / "c", max_per_class=3).datasets  # seeded: the same subsample
    assert again["train"].records == capped["train"].records


def test_balanced_sampler_draws_both_classes_about_equally(synth_root: Path, tmp_path: Path) -> None:
    bundle = _build(synth_root, tmp_path, balance_sampler=True, augment=False)
    train = bundle.datasets["train"]
    labels = train.labels
    assert labels.count(0) / len(labels) < 0.42  # the training set itself is imbalanced

    loader = bundle.loaders["train"]
    draws = []
    for epoch in range(60):
        loader.sampler.set_epoch(epoch)
        draws += [labels[i] for _seed, i in loader.sampler]
    share = draws.count(0) / len(draws)
    assert len(draws) == 60 * len(train)
    assert 0.45 < share < 0.55, share

    drawn = Counter(label for batch in loader for label in batch["label"].tolist())
    assert set(drawn) == {0, 1}


def test_unbalanced_loader_sees_every_training_image_once_per_epoch(synth_root: Path, tmp_path: Path) -> None:
    bundle = _build(synth_root, tmp_path, augment=False, batch_size=5)
    train = bundle.datasets["train"]
    keys = [key for batch in bundle.loaders["train"] for key in batch["key"]]
    assert len(keys) == len(train) - len(train) % 5  # drop_last
    assert len(set(keys)) == len(keys) and set(keys) <= set(train.keys)


def test_corrupt_file_is_skipped_with_a_warning(synth_copy: Path, tmp_path: Path) -> None:
    good = sorted((synth_copy / "train" / "NORMAL").glob("*.jpeg"))[0]
    corrupt = synth_copy / "train" / "NORMAL" / "IM-9999-0001.jpeg"
    corrupt.write_bytes(good.read_bytes()[:200])
    scanned = sum(len(r) for r in scan_dataset(synth_copy).values())

    with pytest.warns(UserWarning, match="skipping 1 unreadable image") as caught:
        bundle = _build(synth_copy, tmp_path, augment=False)

    messages = "\n".join(str(w.message) for w in caught)
    assert str(corrupt) in messages
    datasets = bundle.datasets
    assert all(corrupt not in {r.path for r in d.records} for d in datasets.values())
    assert sum(len(d) for d in datasets.values()) == scanned - 1
    for d in datasets.values():
        totals = d.totals()
        assert totals == {name: sum(r.label == i for r in d.records) for i, name in enumerate(CLASS_NAMES)}
        assert sum(totals.values()) == len(d) == len(d.keys) == len(d.rows)
        # Rows still line up with records after the skip: every sample shows its own file.
        for i in range(len(d)):
            expected = to_model_input(torch.tensor(load_for_model(d.records[i].path, SIZE)).unsqueeze(0))
            torch.testing.assert_close(d[i]["image"], expected, rtol=0, atol=0)
    for loader in bundle.loaders.values():
        assert sum(len(b["key"]) for b in loader) > 0


def test_uncached_path_gives_the_same_tensors(synth_root: Path, tmp_path: Path) -> None:
    cached = _build(synth_root, tmp_path / "a", augment=False)
    uncached = _build(synth_root, tmp_path / "b", augment=False, use_cache=False)
    assert not (tmp_path / "b" / "decoded" / f"images-{SIZE}.u8").exists()
    for name in ("train", "val", "test"):
        a, b = cached.datasets[name], uncached.datasets[name]
        assert a.records == b.records and a.keys == b.keys
        for i in range(len(a)):
            torch.testing.assert_close(a[i]["image"], b[i]["image"], rtol=0, atol=0)


def test_train_image_size_decodes_training_images_larger(synth_root: Path, tmp_path: Path) -> None:
    bundle = build_loaders(_config(synth_root, tmp_path, augment=False), synth_root, image_size=32, seed=0,
                           progress=False, train_image_size=48)
    assert bundle.datasets["train"][0]["image"].shape == (3, 48, 48)
    assert bundle.datasets["val"][0]["image"].shape == (3, 32, 32)


def test_second_build_reuses_split_and_cache(synth_root: Path, tmp_path: Path, monkeypatch) -> None:
    first = _build(synth_root, tmp_path, augment=False)
    decoded: list[Path] = []
    monkeypatch.setattr("cxrdistill.data.cache.load_for_model", lambda path, *size_and_crop: decoded.append(path))
    second = _build(synth_root, tmp_path, augment=False)
    assert decoded == []
    for name in first.datasets:
        assert second.datasets[name].records == first.datasets[name].records
        torch.testing.assert_close(second.datasets[name][0]["image"], first.datasets[name][0]["image"])


def test_memmap_cache_works_in_a_worker_process(synth_root: Path, tmp_path: Path, monkeypatch) -> None:
    reference = _build(synth_root, tmp_path, augment=False)
    expected = {key: reference.datasets["val"][i]["image"] for i, key in enumerate(reference.datasets["val"].keys)}

    bundle = _build(synth_root, tmp_path, augment=False, num_workers=1)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a worker decoded a file instead of reading the cache")

    monkeypatch.setattr(preprocess_module, "load_for_model", no_decoding)  # workers inherit this patch
    loader = bundle.loaders["val"]
    assert loader.num_workers == 1
    seen = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch may warn about few CPU cores on busy machines
        for batch in loader:
            for key, image in zip(batch["key"], batch["image"], strict=True):
                torch.testing.assert_close(image, expected[key], rtol=0, atol=0)
                seen += 1
    assert seen == len(bundle.datasets["val"])
    del loader, bundle  # shut the persistent worker down


def test_augment_settings_take_each_config_field_by_name():
    """Every setting gets a distinct value, so a swap of any two (same type or not) would show."""
    config = DataConfig(max_rotation=7.0, max_translate=0.03, scale_range=(0.8, 1.2), horizontal_flip=True,
                        crop_scale=(0.6, 0.95), brightness=0.11, contrast=0.22, gamma_range=(0.7, 1.4),
                        blur_probability=0.33, noise_std=0.044)
    settings = augment_settings(config)
    assert settings is not None
    for field in dataclasses.fields(settings):
        assert getattr(settings, field.name) == getattr(config, field.name), field.name
    assert augment_settings(DataConfig(augment=False)) is None
