"""Started by ``test_distributed.py`` under ``torchrun``: the ``cxrdistill`` command line, with each rank
writing a digest of its model's state after every training epoch to ``$CXRDISTILL_TEST_DIGESTS/rank{R}.jsonl``
(a test-only hook: the package itself has none)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from torch import nn

from cxrdistill.cli import main
from cxrdistill.training.trainer import Trainer


def state_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def recording(train_epoch):
    def train_and_record(self: Trainer, loader):
        metrics = train_epoch(self, loader)
        line = {"epoch": self.state.epoch + 1, "digest": state_digest(self.saved_model), "batches": len(loader)}
        with open(Path(os.environ["CXRDISTILL_TEST_DIGESTS"]) / f"rank{os.environ['RANK']}.jsonl", "a") as stream:
            stream.write(json.dumps(line) + "\n")
        return metrics

    return train_and_record


if __name__ == "__main__":
    Trainer.train_epoch = recording(Trainer.train_epoch)
    main()
