"""Python's multiprocessing on the same workloads as benches/pool.rs, for a side-by-side table.

Prints one JSON object per line: {"peer": "python", "metric": ..., "value": ..., "unit": ...}.
Standard library only. Run by `cargo bench --bench pool`, or alone:
    python3 benches/peers/mp_pool.py [--tasks 100000] [--roundtrips 20000] [--messages 100000]
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time


def trivial(x):
    return x + 1


def sleep_ms(ms):
    time.sleep(ms / 1000)
    return ms


def echo(inbox, outbox, n):
    for _ in range(n):
        outbox.put(inbox.get())


def produce(q, n):
    for i in range(n):
        q.put(i)


def emit(metric, value, unit, **extra):
    print(json.dumps({"peer": "python", "metric": metric, "value": value, "unit": unit, **extra}), flush=True)


def median_of(runs, fn):
    return statistics.median(fn() for _ in range(runs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--roundtrips", type=int, default=20_000)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--async-tasks", type=int, default=10_000)
    ap.add_argument("--slow-ms", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    workers = len(os.sched_getaffinity(0))
    ctx = mp.get_context("fork")

    with ctx.Pool(workers) as pool:
        pool.map(trivial, range(1000))  # warm up
        for label, chunksize in (("chunksize 1", 1), ("default chunksize", None)):
            def run():
                t = time.perf_counter()
                out = pool.map(trivial, range(args.tasks), chunksize=chunksize)
                assert out[-1] == args.tasks
                return time.perf_counter() - t
            secs = median_of(args.runs, run)
            emit("map_per_task", secs / args.tasks * 1e6, "us", chunksize=label, tasks=args.tasks)

        # joblib (loky backend), if installed: the same tasks with its automatic batching.
        try:
            from joblib import Parallel, delayed
        except ImportError:
            Parallel = None
        if Parallel is not None:
            with Parallel(n_jobs=workers) as parallel:
                parallel(delayed(trivial)(i) for i in range(1000))  # warm up (starts loky)

                def joblib_run():
                    t = time.perf_counter()
                    out = parallel(delayed(trivial)(i) for i in range(args.tasks))
                    assert out[-1] == args.tasks
                    return time.perf_counter() - t
                secs = median_of(args.runs, joblib_run)
            emit("map_per_task", secs / args.tasks * 1e6, "us", chunksize="joblib", tasks=args.tasks)

        def imap_run():
            t = time.perf_counter()
            last = None
            for last in pool.imap(trivial, range(args.tasks), chunksize=1):
                pass
            assert last == args.tasks
            return time.perf_counter() - t
        secs = median_of(args.runs, imap_run)
        emit("imap_per_task", secs / args.tasks * 1e6, "us", chunksize="chunksize 1", tasks=args.tasks)

        def first_result():
            tasks = [args.slow_ms] * workers
            tasks.insert(workers // 2, 0)
            t = time.perf_counter()
            it = pool.imap_unordered(sleep_ms, tasks)
            first = next(it)
            took = time.perf_counter() - t
            assert first == 0
            assert len(list(it)) == workers
            return took
        emit("imap_first_result", median_of(args.runs, first_result) * 1e6, "us")

        def apply_async_rate():
            t = time.perf_counter()
            pending = [pool.apply_async(trivial, (i,)) for i in range(args.async_tasks)]
            total = sum(p.get() for p in pending)
            secs = time.perf_counter() - t
            assert total == args.async_tasks * (args.async_tasks + 1) // 2
            return args.async_tasks / secs
        emit("apply_async_per_s", median_of(args.runs, apply_async_rate), "task/s")

    def roundtrip():
        a, b = ctx.Queue(), ctx.Queue()
        p = ctx.Process(target=echo, args=(a, b, args.roundtrips))
        p.start()
        a.put(0)
        b.get()  # the child is running
        t = time.perf_counter()
        for i in range(args.roundtrips - 1):
            a.put(i)
            b.get()
        secs = time.perf_counter() - t
        p.join()
        return secs / (args.roundtrips - 1)

    emit("queue_roundtrip", median_of(args.runs, roundtrip) * 1e6, "us")

    def throughput():
        q = ctx.Queue(maxsize=1024)
        p = ctx.Process(target=produce, args=(q, args.messages))
        t = time.perf_counter()
        p.start()
        for _ in range(args.messages):
            q.get()
        secs = time.perf_counter() - t
        p.join()
        return args.messages / secs

    emit("queue_messages_per_s", median_of(args.runs, throughput), "msg/s")


if __name__ == "__main__":
    main()
