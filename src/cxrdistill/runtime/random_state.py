"""Every random-number generator a training run draws from, captured and restored as one record.

A resumed run is bit-identical to an uninterrupted one only if each stream continues where it stopped:
torch's CPU generator, the generator of every CUDA device, numpy's global Mersenne Twister (with its
cached second Gaussian of a Box-Muller pair) and Python's ``random`` (with its ``gauss_next``). The record
holds tensors, numbers and lists only, so a resume state loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch


def capture_random_state() -> dict[str, Any]:
    """The state of every generator training uses, as plain tensors, numbers and lists."""
    _, key, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }


def restore_random_state(saved: dict[str, Any]) -> None:
    """Put every generator back as :func:`capture_random_state` found it.

    CUDA generators are restored for the devices both machines have; with another number of devices the
    run continues, with a warning, but its CUDA random draws (dropout on the GPU) differ from the saved run's.
    """
    saved = _from_older_layout(saved)
    torch.set_rng_state(saved["torch"])
    cuda_states = list(saved.get("cuda", []))
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(cuda_states) != devices:
        warnings.warn(f"the resume state holds {len(cuda_states)} CUDA generator(s) but this machine has {devices} "
                      "CUDA device(s): random draws on the GPU will differ from the interrupted run's", stacklevel=2)
    for device, state in enumerate(cuda_states[:devices]):
        torch.cuda.set_rng_state(state, device)
    numpy_state = saved["numpy"]
    np.random.set_state(("MT19937", numpy_state["key"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = saved["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss_next"]))


def _from_older_layout(saved: dict[str, Any]) -> dict[str, Any]:
    """Resume states of earlier versions stored numpy's key and position as one tensor and Python's state as a
    list, without the Gaussian caches (restored as empty: the one part of those states that was not kept)."""
    if not isinstance(saved["numpy"], torch.Tensor):
        return saved
    numpy_state = saved["numpy"]
    return {**saved,
            "numpy": {"key": numpy_state[:-1], "position": int(numpy_state[-1]), "has_gauss": 0,
                      "cached_gaussian": 0.0},
            "python": {"version": 3, "state": list(saved["python"]), "gauss_next": None}}
