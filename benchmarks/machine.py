"""Describe the machine a benchmark ran on (recorded next to every figure)."""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import time
from collections.abc import Sequence
from importlib.metadata import version

import coincurve
import gmpy2


def describe() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "gmpy2": f"{gmpy2.version()} ({gmpy2.mp_version()})",
        "coincurve": version("coincurve"),
        "platform": platform.platform(),
    }


def baseline_sign_samples(count: int = 2000) -> list[float]:
    """Seconds per single-key libsecp256k1 signature (coincurve): the physical limit every
    benchmark reports next to its own figures."""
    key = coincurve.PrivateKey()
    digest = hashlib.sha256(b"baseline").digest()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        key.sign(digest, hasher=None)
        samples.append(time.perf_counter() - start)
    return samples


def summarise(samples: Sequence[float]) -> dict[str, float]:
    """Median, p90, min, max (seconds) of at least two samples."""
    ordered = sorted(samples)
    p90 = statistics.quantiles(ordered, n=10, method="inclusive")[-1]
    return {
        "runs": len(ordered),
        "median": statistics.median(ordered),
        "p90": p90,
        "min": ordered[0],
        "max": ordered[-1],
    }


def fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"
