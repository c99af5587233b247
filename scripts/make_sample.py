"""Rebuild src/cxrdistill/data/sample/kermany-sample.zip, the real-X-ray sample the demo trains on.

Deterministic: the same source folder and Pillow version give the same bytes (check with sha256sum).

    PYTHONPATH=src python scripts/make_sample.py --source ../shared/data/chest_xray_224
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cxrdistill.data.sample import SAMPLE_ARCHIVE, SampleSpec, build_sample
from cxrdistill.files import file_digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("../shared/data/chest_xray_224"),
                        help="Kermany root with train/ (default: ../shared/data/chest_xray_224)")
    parser.add_argument("--out", type=Path, default=SAMPLE_ARCHIVE)
    args = parser.parse_args()
    manifest = build_sample(args.source, args.out, SampleSpec())
    print(json.dumps(manifest["splits"], indent=1))
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.2f} MB, sha256 {file_digest(args.out)}")


if __name__ == "__main__":
    main()
