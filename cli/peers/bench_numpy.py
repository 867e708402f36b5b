"""The bench report's workloads in Python, for `shmpar bench`: numpy serially, and
multiprocessing.Pool over shared_memory (the attachment kept by each worker) and over pickled
chunks. Prints one JSON object per line:
{"workload": ..., "bytes": ..., "variant": ..., "median_s": ..., "gbps": ...}

    python3 cli/peers/bench_numpy.py --sizes 1024,4096,... [--workloads sum,dot] [--procs 2] [--rounds 5]
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from multiprocessing import shared_memory

# One BLAS thread per process: the pool's processes are the parallelism (otherwise each forked
# worker starts its own BLAS threads and they oversubscribe the CPUs).
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

WORKLOADS = ("sum", "dot", "minmax", "hist64", "affine")
_views = {}


def attach(names_shapes):
    # Python 3.13 has track=False; before it, an attaching process registers the segment with
    # its resource tracker, which would unlink the creator's live segment when it exits
    # (see DESIGN). Workers forked from the creator share its tracker, so attaching is safe here.
    for key, (name, n) in names_shapes.items():
        shm = shared_memory.SharedMemory(name=name)
        _views[key] = (shm, np.ndarray((n,), dtype=np.float64, buffer=shm.buf))


def affine(a, out):
    np.multiply(a, 2, out=out)
    out += 1


def kernel(workload, a, b=None):
    if workload == "affine":
        out = np.empty_like(a)
        affine(a, out)
        return out
    if workload == "sum":
        return float(a.sum())
    if workload == "dot":
        return float(np.dot(a, b))
    if workload == "minmax":
        return (float(a.min()), float(a.max()))
    return np.bincount(np.minimum((a * 64).astype(np.int64), 63), minlength=64)


def combine(workload, parts):
    if workload in ("sum", "dot"):
        return sum(parts)
    if workload == "minmax":
        return (min(p[0] for p in parts), max(p[1] for p in parts))
    if workload == "affine":
        return None
    return sum(parts)


def shm_task(args):
    workload, lo, hi = args
    a = _views["a"][1][lo:hi]
    if workload == "affine":
        affine(a, _views["out"][1][lo:hi])
        return None
    b = _views["b"][1][lo:hi] if workload == "dot" else None
    return kernel(workload, a, b)


def pickled_task(args):
    workload, a, b = args
    return kernel(workload, a, b)


def median_time(fn, rounds, min_s=0.002):
    fn()  # warm
    t = time.perf_counter()
    reps = 1
    fn()
    one = time.perf_counter() - t
    reps = max(1, int(min_s / max(one, 1e-7)))
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        samples.append((time.perf_counter() - t) / reps)
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1024,4096,65536,1048576,67108864")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    args = ap.parse_args()
    workloads = [w for w in args.workloads.split(",") if w in WORKLOADS]
    sizes = [int(s) for s in args.sizes.split(",")]
    biggest = max(sizes) // 8
    rng = np.random.default_rng(7)
    shms = {}
    for key in ("a", "b", "out"):
        shm = shared_memory.SharedMemory(create=True, size=biggest * 8)
        arr = np.ndarray((biggest,), dtype=np.float64, buffer=shm.buf)
        arr[:] = rng.random(biggest)
        shms[key] = (shm, arr)
    ctx = mp.get_context("fork")
    try:
        with ctx.Pool(args.procs, initializer=attach, initargs=({k: (v[0].name, biggest) for k, v in shms.items()},)) as pool:
            for workload in workloads:
                for size in sizes:
                    n = size // 8
                    a, b = shms["a"][1][:n], shms["b"][1][:n]
                    bounds = [(i * n // args.procs, (i + 1) * n // args.procs) for i in range(args.procs)]
                    out = shms["out"][1][:n]

                    def pickled_affine():
                        pieces = pool.map(pickled_task, [(workload, a[lo:hi], None) for lo, hi in bounds])
                        for (lo, hi), piece in zip(bounds, pieces):
                            out[lo:hi] = piece

                    variants = {
                        "numpy serial": (lambda: affine(a, out)) if workload == "affine" else (lambda: kernel(workload, a, b)),
                        f"numpy Pool({args.procs}) shared_memory": lambda: combine(workload, pool.map(shm_task, [(workload, lo, hi) for lo, hi in bounds])),
                        f"numpy Pool({args.procs}) pickled": pickled_affine if workload == "affine" else (lambda: combine(workload, pool.map(pickled_task, [(workload, a[lo:hi], b[lo:hi] if workload == "dot" else None) for lo, hi in bounds]))),
                    }
                    for name, fn in variants.items():
                        rounds = args.rounds if size < (64 << 20) or "pickled" not in name else 3
                        secs = median_time(fn, rounds)
                        print(json.dumps({"workload": workload, "bytes": size, "variant": name, "median_s": secs,
                                          "gbps": size * (2 if workload in ("dot", "affine") else 1) / secs / 1e9}), flush=True)
    finally:
        for shm, _ in shms.values():
            shm.close()
            shm.unlink()


if __name__ == "__main__":
    main()
