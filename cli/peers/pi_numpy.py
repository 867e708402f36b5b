"""Monte Carlo pi with numpy, serially and with multiprocessing.Pool, for `shmpar pi`.

Prints one JSON object per line: {"peer": "numpy", "variant": ..., "samples_per_s": ..., "pi": ...}.
    python3 cli/peers/pi_numpy.py [--samples 100000000] [--procs 2]
"""

import argparse
import json
import multiprocessing as mp
import time

import numpy as np

BATCH = 1 << 16  # cache-sized buffers, reused: numpy at its best (no fresh allocations)


def count_inside(args):
    seed, n = args
    rng = np.random.default_rng(seed)  # one independent stream per task (numpy/numpy#9650)
    x = np.empty(BATCH, dtype=np.float32)  # float32: numpy's fastest generator here
    y = np.empty(BATCH, dtype=np.float32)
    inside = 0
    while n > 0:
        m = min(n, BATCH)
        xs, ys = x[:m], y[:m]
        rng.random(out=xs, dtype=np.float32)
        rng.random(out=ys, dtype=np.float32)
        np.multiply(xs, xs, out=xs)
        np.multiply(ys, ys, out=ys)
        np.add(xs, ys, out=xs)
        inside += int(np.count_nonzero(xs < 1.0))
        n -= m
    return inside


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=100_000_000)
    ap.add_argument("--procs", type=int, default=2)
    args = ap.parse_args()
    seeds = np.random.SeedSequence(42).spawn(args.procs)

    t = time.perf_counter()
    inside = count_inside((seeds[0], args.samples))
    secs = time.perf_counter() - t
    print(json.dumps({"peer": "numpy", "variant": "numpy serial", "workers": 1,
                      "samples_per_s": args.samples / secs, "pi": 4 * inside / args.samples}), flush=True)

    with mp.get_context("fork").Pool(args.procs) as pool:
        pool.map(count_inside, [(s, 1000) for s in seeds])  # warm up
        share = args.samples // args.procs
        t = time.perf_counter()
        inside = sum(pool.map(count_inside, [(s, share) for s in seeds]))
        secs = time.perf_counter() - t
    n = share * args.procs
    print(json.dumps({"peer": "numpy", "variant": f"numpy Pool({args.procs})", "workers": args.procs,
                      "samples_per_s": n / secs, "pi": 4 * inside / n}), flush=True)


if __name__ == "__main__":
    main()
