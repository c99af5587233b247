"""Every file the package writes goes through ``cxrdistill.files.atomic_write*``: a killed run or a full disk
never leaves a half-written checkpoint, cache index, split, report or figure behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import cxrdistill.files
from cxrdistill.data.synth import SynthSpec, is_complete_synthetic_set, make_synthetic_dataset
from cxrdistill.evaluation.plots import plot_roc

PACKAGE = Path(cxrdistill.files.__file__).parent
DIRECT_WRITE = re.compile(
    r"\.write_text\(|\.write_bytes\(|open\([^)]*[\"'][wax]b?\+?[\"']|\.savefig\((?!stream)"
    r"|torch\.save\((?!payload, (?:buffer|stream))|np\.save|\.to_csv\(|onnx\.save\(|\.export\("
    r"|Image\.[a-z_]+\([^)]*\)\.save\(|\.save\((?:folder|path|out)\b"
)
ALLOWED = {
    "files.py": "the atomic writers themselves",
    "data/cache.py": "an append-only pixel store: rows past the atomically written index are cut off when "
                     "the next append starts",
    "deployment/export.py": "staged in a temporary folder, checked with ONNX Runtime, then renamed over the target",
    "deployment/quantize.py": "staged in a temporary folder like export.py, then renamed over the target",
    "runtime/resources.py": "writes the kernel's /proc/self/clear_refs, not a file",
    "deployment/profile.py": "serialises the weights into an in-memory buffer to size them, not a file",
}


def test_the_audit_sees_direct_writes():
    for line in ('open(self.metrics_path, "a")', "path.write_text(text)", "Image.fromarray(pixels).save(",
                 "torch.save(state, path)", "fig.savefig(out, dpi=100)"):
        assert DIRECT_WRITE.search(line), line


def test_no_module_writes_a_file_directly():
    offenders = []
    for source in sorted(PACKAGE.rglob("*.py")):
        relative = source.relative_to(PACKAGE).as_posix()
        if relative in ALLOWED:
            continue
        for number, line in enumerate(source.read_text().splitlines(), 1):
            if DIRECT_WRITE.search(line.split("#")[0]):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert not offenders, "write through cxrdistill.files.atomic_write*:\n" + "\n".join(offenders)


def test_a_failed_figure_write_keeps_the_previous_figure(tmp_path, monkeypatch):
    path = plot_roc([0, 1, 0, 1], [0.2, 0.9, 0.4, 0.6], tmp_path / "roc.png")
    before = path.read_bytes()
    real_replace = cxrdistill.files.os.replace

    def fail(source, target):
        raise OSError("injected failure")

    monkeypatch.setattr(cxrdistill.files.os, "replace", fail)
    with pytest.raises(OSError, match="injected"):
        plot_roc([0, 1, 0, 1], [0.9, 0.2, 0.4, 0.6], path)
    monkeypatch.setattr(cxrdistill.files.os, "replace", real_replace)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["roc.png"]


def test_an_interrupted_synthetic_set_is_not_taken_for_a_finished_one(tmp_path, monkeypatch):
    spec = SynthSpec(normal_patients=2, pneumonia_patients=2, image_size=(32, 32), seed=0)
    real_write = cxrdistill.data.synth.atomic_write
    written = []

    def interrupted(path, write):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(path)
        return real_write(path, write)

    monkeypatch.setattr(cxrdistill.data.synth, "atomic_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_dataset(tmp_path / "synth", spec)
    assert not is_complete_synthetic_set(tmp_path / "synth")
    monkeypatch.undo()
    make_synthetic_dataset(tmp_path / "synth", spec)  # the same spec: finished in place
    assert is_complete_synthetic_set(tmp_path / "synth")
