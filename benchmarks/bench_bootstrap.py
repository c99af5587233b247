"""Patient-bootstrap intervals: the vectorised ROC AUC against one ``roc_auc_score`` call per resample.

The baseline is what :func:`cxrdistill.evaluation.metrics._metrics_from_weights` did before: for each
resample, scikit-learn's AUC on the drawn images with their multiplicities as ``sample_weight``. Both run on
the same resample weights (1000 patient resamples of 800 images, 2 films per patient), interleaved round by
round; the ratio of times is reported with its interval, and the two AUC vectors must agree.
"""

from __future__ import annotations

import time

import numpy as np
from _common import describe, parse, parser, ratio_interval, write_result
from sklearn.metrics import roc_auc_score

from cxrdistill.evaluation.metrics import bootstrap_weights, weighted_roc_auc

NAME = "bench_bootstrap"


def per_resample_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    out = np.full(weights.shape[0], np.nan)
    for row in range(weights.shape[0]):
        drawn = weights[row] > 0
        if len(np.unique(y[drawn])) == 2:
            out[row] = roc_auc_score(y[drawn], p[drawn], sample_weight=weights[row, drawn])
    return out


def main(argv: list[str] | None = None) -> dict:
    args, argv = parse(parser(__doc__.splitlines()[0]), argv)
    images, resamples, rounds = (200, 100, 2) if args.quick else (800, 1000, 5)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, images)
    p = np.clip(0.3 * y + 0.7 * rng.random(images), 0.0, 1.0)
    patients = np.repeat(np.arange(images // 2), 2)
    weights = np.concatenate(list(bootstrap_weights(np.random.default_rng(1), images, resamples, patients)))
    timings: dict[str, list[float]] = {"per_resample": [], "vectorised": []}
    for _ in range(rounds):
        for name, auc in (("per_resample", per_resample_auc), ("vectorised", weighted_roc_auc)):
            started = time.perf_counter()
            values = auc(y, p, weights)
            timings[name].append(time.perf_counter() - started)
        np.testing.assert_allclose(values, per_resample_auc(y, p, weights), rtol=1e-12)
    speedup = ratio_interval([b / v for b, v in zip(timings["per_resample"], timings["vectorised"], strict=True)])
    print(f"{resamples} resamples of {images} images: per-resample sklearn {np.median(timings['per_resample']):.3f} s, "
          f"vectorised {np.median(timings['vectorised']):.4f} s; speed-up {describe(speedup)}")
    payload = {"seconds": timings, "ratios": {"vectorised_vs_per_resample": speedup}, "targets": {}}
    write_result(NAME, __file__, argv, args, {"images": images, "resamples": resamples, "rounds": rounds}, payload)
    return payload


if __name__ == "__main__":
    main()
