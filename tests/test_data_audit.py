"""``cxrdistill data audit`` (cxrdistill.data.audit) and the ``data`` commands of the CLI."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cxrdistill.cli import app
from cxrdistill.data.audit import (
    NEAR_DUPLICATE_BITS,
    audit_dataset,
    difference_hash,
    near_duplicate_groups,
    thumbnail,
)
from cxrdistill.data.io import read_grey
from cxrdistill.data.layout import CLASS_NAMES, scan_dataset


def _hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def _reencoded(path: Path, quality: int, shrink: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The picture at ``path`` saved again as JPEG (optionally a little smaller), decoded."""
    with Image.open(path) as image:
        image = image.convert("L")
        if shrink != (0, 0):
            image = image.resize((image.width - shrink[0], image.height - shrink[1]), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("L"))


def _counts(root: Path) -> dict[str, dict[str, int]]:
    return {split: {name: sum(r.label == i for r in records) for i, name in enumerate(CLASS_NAMES)}
            for split, records in scan_dataset(root).items()}


@pytest.fixture(scope="module")
def clean_report(synth_root: Path):
    return audit_dataset(synth_root, progress=False)


# --------------------------------------------------------------------------- hashes


def test_difference_hash_is_stable_under_reencoding(synth_root: Path) -> None:
    for path in sorted(synth_root.rglob("*.jpeg"))[::5]:
        original = difference_hash(read_grey(path))
        assert 0 <= original < 2**64
        assert difference_hash(read_grey(path)) == original  # deterministic
        for quality, shrink in ((60, (0, 0)), (35, (0, 0)), (50, (4, 4)), (80, (9, 7))):
            assert _hamming(difference_hash(_reencoded(path, quality, shrink)), original) <= NEAR_DUPLICATE_BITS


def test_difference_hash_sees_structure() -> None:
    ramp = np.tile(np.arange(0, 250, 2, dtype=np.uint8), (100, 1))  # brighter to the right everywhere
    assert difference_hash(ramp) == 2**64 - 1
    assert difference_hash(ramp[:, ::-1].copy()) == 0
    assert _hamming(difference_hash(ramp), difference_hash(ramp[:, ::-1].copy())) == 64


def test_near_duplicate_groups_are_connected_components() -> None:
    hashes = [0b0, 0b11, 0b1111, 2**64 - 1, 2**64 - 2, 0b1010_1010_1010_1010 << 20]
    names = ["a", "b", "c", "d", "e", "f"]
    # a-b (2 bits) and b-c (2 bits) chain into one group although a-c differ in 4 > 3 bits.
    assert near_duplicate_groups(hashes, names, max_bits=3) == [["a", "b", "c"], ["d", "e"]]
    assert near_duplicate_groups(hashes, names, max_bits=0) == []
    assert near_duplicate_groups(hashes[:1], names[:1], max_bits=64) == []


def test_near_duplicate_groups_across_chunks() -> None:
    rng = np.random.default_rng(0)
    hashes = [int(h) for h in rng.integers(0, 2**63, size=1100, dtype=np.int64)]
    hashes[1050] = hashes[3] ^ 0b101  # a near copy far away from its original, in another chunk
    names = [f"f{i:04d}" for i in range(len(hashes))]
    assert near_duplicate_groups(hashes, names, max_bits=4) == [["f0003", "f1050"]]


def test_thumbnails_confirm_hash_candidates() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 200, size=(60, 80), dtype=np.uint8)
    other = rng.integers(0, 200, size=(60, 80), dtype=np.uint8)
    brighter = np.round(base * 1.2 + 10).astype(np.uint8)  # the same picture at another exposure
    thumbs = np.stack([thumbnail(base), thumbnail(other), thumbnail(brighter)])
    assert thumbs.shape == (3, 32 * 32)
    np.testing.assert_allclose(np.linalg.norm(thumbs, axis=1), 1.0, rtol=1e-5)
    # Equal hashes make all three candidates; only the two exposures of one picture are confirmed.
    assert near_duplicate_groups([5, 5, 5], ["a", "b", "c"], 0) == [["a", "b", "c"]]
    assert near_duplicate_groups([5, 5, 5], ["a", "b", "c"], 0, thumbs) == [["a", "c"]]
    assert near_duplicate_groups([5, 5, 5], ["a", "b", "c"], 0, thumbs, min_correlation=-1.0) == [["a", "b", "c"]]


# --------------------------------------------------------------------------- audit_dataset


def test_audit_of_a_clean_set_reports_nothing_wrong(clean_report, synth_root: Path) -> None:
    report = clean_report
    assert report.counts == _counts(synth_root)
    assert report.unreadable == []
    assert report.non_image_files == []
    assert report.exact_duplicates == []
    # Distinct pictures, even several films of one patient, are not near duplicates.
    assert report.near_duplicates == []
    assert report.patients_in_several_splits == {}
    assert report.unparsed_patient_names == 0
    assert report.size_stats["width"] == {"min": 72, "median": 72.0, "max": 72}
    assert report.size_stats["height"] == {"min": 64, "median": 64.0, "max": 64}
    assert report.modes == {"L": sum(sum(c.values()) for c in report.counts.values())}


@pytest.fixture
def damaged(synth_copy: Path) -> dict[str, object]:
    """A synthetic copy with one of each problem the audit looks for."""
    root = synth_copy
    normal = sorted((root / "train" / "NORMAL").glob("*.jpeg"))
    pneumonia = sorted((root / "train" / "PNEUMONIA").glob("*.jpeg"))

    exact = root / "train" / "NORMAL" / "IM-8001-0001.jpeg"
    shutil.copy(normal[0], exact)

    near = root / "train" / "PNEUMONIA" / "person8002_virus_1.jpeg"
    Image.fromarray(_reencoded(pneumonia[0], quality=40, shrink=(4, 4))).save(near, format="JPEG", quality=40)

    corrupt = root / "train" / "NORMAL" / "IM-8003-0001.jpeg"
    corrupt.write_bytes(normal[1].read_bytes()[:250])

    notes = root / "train" / "NORMAL" / "notes.txt"
    notes.write_text("scanner settings\n")

    # A patient of train/ also in test/, with a picture of its own (no duplicate of anything).
    leaked_patient = normal[2].name.rsplit("-", 1)[0]  # IM-NNNN
    leak = root / "test" / "NORMAL" / f"{leaked_patient}-0009.jpeg"
    Image.fromarray(np.flipud(read_grey(normal[2])).copy()).save(leak, format="JPEG", quality=90)

    def rel(p: Path) -> str:
        return str(p.relative_to(root))

    return {"root": root, "exact": [rel(normal[0]), rel(exact)], "near": [rel(pneumonia[0]), rel(near)],
            "corrupt": rel(corrupt), "notes": rel(notes), "patient": leaked_patient}


def test_audit_reports_each_problem(damaged: dict[str, object], clean_report) -> None:
    report = audit_dataset(damaged["root"], progress=False)

    assert report.counts == _counts(damaged["root"])
    assert report.counts["train"]["NORMAL"] == clean_report.counts["train"]["NORMAL"] + 2  # copy + corrupt file
    assert report.counts["train"]["PNEUMONIA"] == clean_report.counts["train"]["PNEUMONIA"] + 1
    assert report.counts["test"]["NORMAL"] == clean_report.counts["test"]["NORMAL"] + 1

    assert [u["file"] for u in report.unreadable] == [damaged["corrupt"]]
    assert "truncated" in report.unreadable[0]["reason"]
    assert report.non_image_files == [damaged["notes"]]
    assert report.exact_duplicates == [sorted(damaged["exact"])]
    # Only the re-encoded copy is a near duplicate: the exact copy is reported once, as exact, and
    # the flipped picture of the leaked patient is a different picture.
    assert report.near_duplicates == [sorted(damaged["near"])]
    assert report.patients_in_several_splits == {damaged["patient"]: ["test", "train"]}
    assert report.unparsed_patient_names == 0
    assert report.size_stats["width"]["min"] == 68 and report.size_stats["width"]["max"] == 72
    readable = sum(sum(c.values()) for c in report.counts.values()) - 1
    assert report.modes == {"L": readable}
    json.dumps(report.as_dict())  # the report is plain data


def test_audit_counts_unparsed_names_and_bare_folders(tmp_path: Path, synth_root: Path) -> None:
    root = tmp_path / "external"
    for name in CLASS_NAMES:
        (root / name).mkdir(parents=True)
        for i, source in enumerate(sorted((synth_root / "test" / name).glob("*.jpeg"))[:2]):
            shutil.copy(source, root / name / f"scan{i}.jpeg")
    report = audit_dataset(root, progress=False)
    assert report.counts == {"(all)": {"NORMAL": 2, "PNEUMONIA": 2}}
    assert report.unparsed_patient_names == 4
    assert report.patients_in_several_splits == {}


def test_audit_reads_dicom_files(tmp_path: Path, synth_root: Path) -> None:
    pytest.importorskip("pydicom", reason="DICOM support is the optional 'dicom' extra")
    from image_files import write_dicom

    root = tmp_path / "data"
    shutil.copytree(synth_root / "test", root)
    write_dicom(root / "NORMAL" / "IM-7001-0001.dcm", np.arange(48 * 40, dtype=np.uint16).reshape(48, 40))

    report = audit_dataset(root, progress=False)

    assert report.unreadable == []
    assert report.counts["(all)"]["NORMAL"] == len(list((root / "NORMAL").iterdir()))
    assert report.modes.get("DICOM") == 1
    assert report.size_stats["height"]["max"] == 64 and report.size_stats["width"]["min"] == 40


def test_audit_of_only_unreadable_files(tmp_path: Path) -> None:
    for name in CLASS_NAMES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.jpeg").write_text("not an image")
        (tmp_path / name / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    report = audit_dataset(tmp_path, progress=False)
    assert len(report.unreadable) == 4
    assert report.exact_duplicates == [["NORMAL/a.jpeg", "PNEUMONIA/a.jpeg"], ["NORMAL/b.png", "PNEUMONIA/b.png"]]
    assert report.near_duplicates == [] and report.size_stats == {} and report.modes == {}


def test_audit_of_a_missing_folder_is_a_layout_error(tmp_path: Path) -> None:
    from cxrdistill.data.layout import DatasetLayoutError

    with pytest.raises(DatasetLayoutError):
        audit_dataset(tmp_path / "missing", progress=False)


def test_near_duplicates_in_real_like_structure_are_not_merged(tmp_path: Path) -> None:
    # Many films share one layout (dark lungs either side of a bright spine): a coarse hash alone would
    # group them all. Distinct pictures with that layout must stay apart; a re-encoded copy must not.
    rng = np.random.default_rng(1)
    root = tmp_path / "layout"
    columns = np.abs(np.linspace(-1, 1, 96))[None, :]
    base = np.clip(60 + 150 * np.abs(columns - 0.5) * 2, 0, 255) * np.ones((80, 1))
    for name in CLASS_NAMES:
        (root / name).mkdir(parents=True)
    for i in range(12):
        texture = np.kron(rng.normal(0, 25, size=(10, 12)), np.ones((8, 8)))
        pixels = np.clip(base + texture, 0, 255).astype(np.uint8)
        folder = root / CLASS_NAMES[i % 2]
        Image.fromarray(pixels).save(folder / f"film{i}.png")
    first = root / "NORMAL" / "film0.png"
    Image.fromarray(_reencoded(first, quality=50, shrink=(6, 5))).save(root / "NORMAL" / "copy.jpeg", quality=50)

    report = audit_dataset(root, progress=False)

    assert report.near_duplicates == [["NORMAL/copy.jpeg", "NORMAL/film0.png"]]


# --------------------------------------------------------------------------- CLI


def test_cli_data_audit_json(synth_root: Path, clean_report) -> None:
    result = CliRunner().invoke(app, ["data", "audit", str(synth_root), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["counts"] == clean_report.counts
    assert payload["root"] == str(synth_root)
    assert payload["near_duplicates"] == [] and payload["unreadable"] == []


def test_cli_data_audit_table(damaged: dict[str, object]) -> None:
    result = CliRunner().invoke(app, ["data", "audit", str(damaged["root"])])
    assert result.exit_code == 0, result.output
    assert "unreadable files: 1" in result.stdout
    assert damaged["corrupt"] in result.stdout
    assert "exact duplicate groups: 1" in result.stdout
    assert "near-duplicate groups: 1" in result.stdout


def test_cli_data_audit_of_a_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = CliRunner().invoke(app, ["data", "audit", str(missing)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = result.stderr.strip()
    assert message.startswith("error:")
    assert "does not exist" in message
    assert len(message.splitlines()) == 1, message


def test_cli_data_synth_writes_a_set(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    result = CliRunner().invoke(
        app, ["data", "synth", str(out), "--normal-patients", "3", "--pneumonia-patients", "4", "--seed", "2"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "SYNTHETIC.md").is_file()
    counts = _counts(out)
    assert set(counts) == {"train", "test"}
    assert all(n > 0 for by_class in counts.values() for n in by_class.values())
    assert "SYNTHETIC" in result.stdout
    # Written again with the same spec: accepted, same files.
    again = CliRunner().invoke(
        app, ["data", "synth", str(out), "--normal-patients", "3", "--pneumonia-patients", "4", "--seed", "2"]
    )
    assert again.exit_code == 0 and _counts(out) == counts


def test_cli_data_synth_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep.txt").write_text("real data")
    result = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "real")])
    assert result.exit_code != 0
    assert (tmp_path / "real" / "keep.txt").read_text() == "real data"
    assert not (tmp_path / "real" / "train").exists()
