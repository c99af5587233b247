"""The decoded-image cache and the file-hash memo (cxrdistill.data.cache)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cxrdistill.data.cache as cache_module
from cxrdistill.data.cache import DecodedImageCache, FileHasher
from cxrdistill.data.io import UnreadableImageError, load_for_model

SIZE = 32


@pytest.fixture
def images(synth_root: Path, tmp_path: Path) -> list[Path]:
    """Eight private copies of synthetic images (tests may rewrite them)."""
    folder = tmp_path / "images"
    folder.mkdir()
    sources = sorted(synth_root.rglob("*.jpeg"))[:8]
    return [Path(shutil.copy2(p, folder / p.name)) for p in sources]


@pytest.fixture
def decode_counter(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every file the cache decodes."""
    decoded: list[Path] = []
    real = cache_module.load_for_model

    def counting(path, *size_and_crop):
        decoded.append(Path(path))
        return real(path, *size_and_crop)

    monkeypatch.setattr(cache_module, "load_for_model", counting)
    return decoded


def _row_bytes() -> int:
    return SIZE * SIZE


def _write_image(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path, format="JPEG", quality=95)


def _bump_mtime(path: Path, seconds: int = 10) -> None:
    """Make sure a rewritten file does not share its old (size, mtime) however coarse the clock."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 1_000_000_000))


def test_rows_equal_a_direct_decode(images: list[Path], tmp_path: Path) -> None:
    cache = DecodedImageCache(tmp_path / "cache", SIZE)
    rows, errors = cache.add(images, progress=False)

    assert errors == []
    assert sorted(rows) == list(range(len(images)))  # distinct files get distinct rows
    for path, row in zip(images, rows, strict=True):
        cached = cache.row(row)
        assert cached.shape == (SIZE, SIZE) and cached.dtype == np.uint8
        np.testing.assert_array_equal(cached, load_for_model(path, SIZE))
    assert (tmp_path / "cache" / f"images-{SIZE}.u8").stat().st_size == len(images) * _row_bytes()


def test_second_add_decodes_nothing(images: list[Path], tmp_path: Path, decode_counter: list[Path]) -> None:
    cache = DecodedImageCache(tmp_path / "cache", SIZE)
    first, _ = cache.add(images, progress=False)
    assert sorted(decode_counter) == sorted(images)
    decode_counter.clear()

    second, errors = cache.add(list(reversed(images)), progress=False)

    assert decode_counter == []
    assert errors == []
    assert second == list(reversed(first))


def test_a_later_run_reuses_rows_without_decoding(
    images: list[Path], tmp_path: Path, decode_counter: list[Path]
) -> None:
    first_run = DecodedImageCache(tmp_path / "cache", SIZE)
    rows, _ = first_run.add(images[:5], progress=False)
    decode_counter.clear()

    later_run = DecodedImageCache(tmp_path / "cache", SIZE)
    later_rows, _ = later_run.add(images, progress=False)

    assert later_rows[:5] == rows
    assert sorted(decode_counter) == sorted(images[5:])  # only the new files
    for path, row in zip(images, later_rows, strict=True):
        np.testing.assert_array_equal(later_run.row(row), load_for_model(path, SIZE))


def test_identical_files_share_one_row(images: list[Path], tmp_path: Path, decode_counter: list[Path]) -> None:
    twin = Path(shutil.copy(images[0], tmp_path / "twin.jpeg"))
    cache = DecodedImageCache(tmp_path / "cache", SIZE)
    rows, _ = cache.add([images[0], twin, images[1]], progress=False)
    assert rows[0] == rows[1] != rows[2]
    assert len(decode_counter) == 2


def test_rewritten_file_gets_a_new_row_and_the_old_entry_stays_valid(
    images: list[Path], tmp_path: Path
) -> None:
    cache = DecodedImageCache(tmp_path / "cache", SIZE)
    target = images[0]
    old_digest = hashlib.sha256(target.read_bytes()).hexdigest()
    old_pixels = load_for_model(target, SIZE)
    (old_row,), _ = cache.add([target], progress=False)

    _write_image(target, 255 - np.asarray(Image.open(images[1]).convert("L")))  # another picture, same name
    _bump_mtime(target)
    new_pixels = load_for_model(target, SIZE)
    assert not np.array_equal(new_pixels, old_pixels)

    (new_row,), errors = cache.add([target], progress=False)

    assert errors == [] and new_row != old_row
    np.testing.assert_array_equal(cache.row(new_row), new_pixels)
    np.testing.assert_array_equal(cache.row(old_row), old_pixels)
    index = json.loads((tmp_path / "cache" / f"index-{SIZE}.json").read_text())["rows"]
    assert index[old_digest] == old_row
    assert index[hashlib.sha256(target.read_bytes()).hexdigest()] == new_row


@pytest.mark.parametrize("garbage", [17, SIZE * SIZE, 3 * SIZE * SIZE + 5])
def test_bytes_left_by_a_killed_append_are_dropped(
    images: list[Path], tmp_path: Path, garbage: int
) -> None:
    cache = DecodedImageCache(tmp_path / "cache", SIZE)
    rows, _ = cache.add(images[:4], progress=False)
    data = tmp_path / "cache" / f"images-{SIZE}.u8"
    with open(data, "ab") as stream:  # a run killed after writing pixels, before writing the index
        stream.write(bytes([0xAB]) * garbage)

    # Until the next append, the stray bytes are unreferenced and every indexed row still reads right.
    reader = DecodedImageCache(tmp_path / "cache", SIZE)
    assert reader.add(images[:4], progress=False)[0] == rows
    for path, row in zip(images[:4], rows, strict=True):
        np.testing.assert_array_equal(reader.row(row), load_for_model(path, SIZE))

    next_run = DecodedImageCache(tmp_path / "cache", SIZE)
    all_rows, errors = next_run.add(images, progress=False)

    assert errors == []
    assert all_rows[:4] == rows
    assert sorted(all_rows) == list(range(len(images)))  # new rows follow the indexed ones, no gap
    assert data.stat().st_size == len(images) * _row_bytes()
    for path, row in zip(images, all_rows, strict=True):
        np.testing.assert_array_equal(next_run.row(row), load_for_model(path, SIZE))


def test_data_file_without_index_is_rebuilt(images: list[Path], tmp_path: Path) -> None:
    cache = DecodedImageCache(tmp_path / "cache", SIZE)
    cache.add(images[:3], progress=False)
    (tmp_path / "cache" / f"index-{SIZE}.json").unlink()  # killed before the very first index was written

    rows, _ = DecodedImageCache(tmp_path / "cache", SIZE).add(images[3:6], progress=False)

    assert rows == [0, 1, 2]
    assert (tmp_path / "cache" / f"images-{SIZE}.u8").stat().st_size == 3 * _row_bytes()
    for path, row in zip(images[3:6], rows, strict=True):
        np.testing.assert_array_equal(cache.row(row), load_for_model(path, SIZE))


def test_unreadable_files_get_row_minus_one_and_do_not_poison_the_cache(
    images: list[Path], tmp_path: Path, decode_counter: list[Path]
) -> None:
    broken = tmp_path / "images" / "person1_virus_1.jpeg"
    broken.write_bytes(images[0].read_bytes()[:300])  # a truncated JPEG
    text = tmp_path / "images" / "IM-0001-0001.jpeg"
    text.write_text("not an image")
    paths = [images[0], broken, images[1], text, images[2]]
    cache = DecodedImageCache(tmp_path / "cache", SIZE)

    rows, errors = cache.add(paths, progress=False)

    assert rows[1] == rows[3] == -1
    assert sorted(r for r in rows if r >= 0) == [0, 1, 2]
    assert all(isinstance(e, UnreadableImageError) for e in errors)
    assert sorted(e.path for e in errors) == sorted([broken, text])
    for path, row in zip(paths, rows, strict=True):
        if row >= 0:
            np.testing.assert_array_equal(cache.row(row), load_for_model(path, SIZE))
    assert (tmp_path / "cache" / f"images-{SIZE}.u8").stat().st_size == 3 * _row_bytes()

    # Nothing about the bad files was stored: they are tried again, and a repaired file is cached.
    shutil.copy(images[3], broken)
    _bump_mtime(broken)
    decode_counter.clear()
    rows, errors = DecodedImageCache(tmp_path / "cache", SIZE).add(paths, progress=False)
    assert sorted(decode_counter) == sorted([broken, text])
    assert [e.path for e in errors] == [text]
    assert rows[1] == 3 and rows[3] == -1
    np.testing.assert_array_equal(cache.row(rows[1]), load_for_model(images[3], SIZE))


def test_sizes_are_cached_separately(images: list[Path], tmp_path: Path) -> None:
    small = DecodedImageCache(tmp_path / "cache", 16)
    large = DecodedImageCache(tmp_path / "cache", SIZE)
    (small_row,), _ = small.add(images[:1], progress=False)
    (large_row,), _ = large.add(images[:1], progress=False)
    assert small.row(small_row).shape == (16, 16)
    assert large.row(large_row).shape == (SIZE, SIZE)
    np.testing.assert_array_equal(small.row(small_row), load_for_model(images[0], 16))


def test_cache_rows_are_read_only(images: list[Path], tmp_path: Path) -> None:
    cache = DecodedImageCache(tmp_path / "cache", SIZE)
    (row,), _ = cache.add(images[:1], progress=False)
    with pytest.raises(ValueError):
        cache.row(row)[0, 0] = 1


def test_pickled_cache_opens_its_own_memory_map(images: list[Path], tmp_path: Path) -> None:
    cache = DecodedImageCache(tmp_path / "cache", SIZE)
    rows, _ = cache.add(images, progress=False)
    cache.row(rows[0])  # the parent process has a map open
    payload = pickle.dumps(cache)
    assert len(payload) < 50_000  # pixels are not shipped to workers
    clone = pickle.loads(payload)
    for path, row in zip(images, rows, strict=True):
        np.testing.assert_array_equal(clone.row(row), load_for_model(path, SIZE))


def test_digests_are_sha256_of_the_bytes(images: list[Path], tmp_path: Path) -> None:
    cache = DecodedImageCache(tmp_path / "cache", SIZE)
    assert cache.digests(images) == [hashlib.sha256(p.read_bytes()).hexdigest() for p in images]


# --------------------------------------------------------------------------- FileHasher


@pytest.fixture
def hash_counter(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    hashed: list[Path] = []
    real = cache_module.file_digest

    def counting(path, *args, **kwargs):
        hashed.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cache_module, "file_digest", counting)
    return hashed


def test_file_hasher_memo_rehashes_when_mtime_or_size_change(tmp_path: Path, hash_counter: list[Path]) -> None:
    file = tmp_path / "a.bin"
    file.write_bytes(b"first content")
    hasher = FileHasher(tmp_path / "memo.json")

    digest = hasher.digest(file)
    assert digest == hashlib.sha256(b"first content").hexdigest()
    assert hasher.digest(file) == digest
    assert len(hash_counter) == 1  # memoised

    _bump_mtime(file)  # touched, same bytes: hashed again, same digest
    assert hasher.digest(file) == digest
    assert len(hash_counter) == 2

    stat = file.stat()
    file.write_bytes(b"second, longer content")  # size changes even with the old mtime restored
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert hasher.digest(file) == hashlib.sha256(b"second, longer content").hexdigest()
    assert len(hash_counter) == 3


def test_file_hasher_memo_is_keyed_by_stat_not_content(tmp_path: Path, hash_counter: list[Path]) -> None:
    # The documented trade-off: same size and same mtime means "unchanged", without reading the file.
    file = tmp_path / "a.bin"
    file.write_bytes(b"AAAA")
    hasher = FileHasher(None)
    before = hasher.digest(file)
    stat = file.stat()
    file.write_bytes(b"BBBB")
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert hasher.digest(file) == before
    assert len(hash_counter) == 1


def test_file_hasher_memo_survives_a_restart(tmp_path: Path, hash_counter: list[Path]) -> None:
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.bin")
        files[-1].write_bytes(bytes([i]) * (i + 1))
    memo = tmp_path / "memo" / "hashes.json"
    first = FileHasher(memo)
    digests = [first.digest(f) for f in files]
    first.save()
    hash_counter.clear()

    later = FileHasher(memo)
    assert [later.digest(f) for f in files] == digests
    assert hash_counter == []


def test_damaged_hash_memo_only_costs_rehashing(tmp_path: Path, hash_counter: list[Path]) -> None:
    file = tmp_path / "a.bin"
    file.write_bytes(b"x")
    memo = tmp_path / "memo.json"
    memo.write_text('{"cut short": ')
    hasher = FileHasher(memo)
    assert hasher.digest(file) == hashlib.sha256(b"x").hexdigest()
    hasher.save()
    assert str(file.resolve()) in json.loads(memo.read_text())


def test_file_hasher_resolves_paths(tmp_path: Path, hash_counter: list[Path]) -> None:
    file = tmp_path / "a.bin"
    file.write_bytes(b"x")
    hasher = FileHasher(None)
    hasher.digest(file)
    hasher.digest(tmp_path / "." / "a.bin")
    assert len(hash_counter) == 1


def test_reader_sees_rows_appended_by_another_cache_object(images: list[Path], tmp_path: Path) -> None:
    # Two datasets (or two runs) share one cache folder: one maps the file, the other appends to it.
    reader = DecodedImageCache(tmp_path / "cache", SIZE)
    rows, _ = reader.add(images[:2], progress=False)
    reader.row(rows[0])
    writer = DecodedImageCache(tmp_path / "cache", SIZE)
    new_rows, _ = writer.add(images[2:4], progress=False)

    again, _ = reader.add(images[2:4], progress=False)  # nothing to decode, so nothing reset

    assert again == new_rows
    for path, row in zip(images[:4], rows + again, strict=True):
        np.testing.assert_array_equal(reader.row(row), load_for_model(path, SIZE))
