"""Python's routes between processes, for `shmpar ipc`: the one-way latency of a small message
(half a round trip, median) and the throughput of 1 MiB payloads, through multiprocessing's
Queue, Pipe, a Manager's Queue, and shared_memory (signalled with Events).

Prints one JSON object per line: {"peer": "python", "route": ..., "small_us": ..., "mib_gbps": ...}.
    python3 cli/peers/ipc.py [--rounds 2000] [--payloads 64]
"""

import argparse
import json
import multiprocessing as mp
import statistics
import time
from multiprocessing import shared_memory

MIB = 1 << 20


def echo(inbox, outbox, n):
    for _ in range(n):
        outbox.put(inbox.get(timeout=30))


def drain(inbox, outbox, n):
    total = 0
    for _ in range(n):
        total += len(inbox.get(timeout=30))
    outbox.put(total)


def pipe_echo(end, n):
    for _ in range(n):
        if not end.poll(30):
            return
        end.send(end.recv())


def pipe_drain(end, n):
    total = 0
    for _ in range(n):
        if not end.poll(30):
            return
        total += len(end.recv())
    end.send(total)


def shm_reader(name, ready, done, n):
    shm = shared_memory.SharedMemory(name=name)
    for _ in range(n):
        if not ready.wait(30):
            return
        ready.clear()
        bytes(shm.buf[:MIB])  # read the payload
        done.set()
    shm.close()


def event_echo(ping, pong, n):
    for _ in range(n):
        if not ping.wait(30):
            return
        ping.clear()
        pong.set()


def one_way_us(round_trip, rounds):
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        round_trip()
        times.append(time.perf_counter() - t)
    return statistics.median(times) / 2 * 1e6


def queues(ctx, make, rounds, payloads):
    inbox, outbox = make(), make()
    p = ctx.Process(daemon=True, target=echo, args=(inbox, outbox, rounds))
    p.start()

    def rt():
        inbox.put(1)
        outbox.get(timeout=30)
    small = one_way_us(rt, rounds)
    p.join()
    p = ctx.Process(daemon=True, target=drain, args=(inbox, outbox, payloads))
    p.start()
    payload = bytes(MIB)
    t = time.perf_counter()
    for _ in range(payloads):
        inbox.put(payload)
    assert outbox.get(timeout=30) == payloads * MIB
    secs = time.perf_counter() - t
    p.join()
    return small, payloads * MIB / secs / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--payloads", type=int, default=64)
    args = ap.parse_args()
    ctx = mp.get_context("fork")

    def emit(route, small, gbps):
        print(json.dumps({"peer": "python", "route": route, "small_us": small, "mib_gbps": gbps}),
              flush=True)

    emit("Queue", *queues(ctx, ctx.Queue, args.rounds, args.payloads))
    with ctx.Manager() as manager:
        emit("Manager Queue", *queues(ctx, manager.Queue, args.rounds // 4, args.payloads // 4))

    a, b = ctx.Pipe()
    p = ctx.Process(daemon=True, target=pipe_echo, args=(b, args.rounds))
    p.start()

    def rt():
        a.send(1)
        if not a.poll(30):
            raise TimeoutError("the echo process stopped answering")
        a.recv()
    small = one_way_us(rt, args.rounds)
    p.join()
    p = ctx.Process(daemon=True, target=pipe_drain, args=(b, args.payloads))
    p.start()
    payload = bytes(MIB)
    t = time.perf_counter()
    for _ in range(args.payloads):
        a.send(payload)
    if not a.poll(30):
        raise TimeoutError("the reader process stopped answering")
    assert a.recv() == args.payloads * MIB
    emit("Pipe", small, args.payloads * MIB / (time.perf_counter() - t) / 1e9)
    p.join()

    # shared_memory: the payload is written in place; Events say "ready" and "read".
    ping, pong = ctx.Event(), ctx.Event()
    p = ctx.Process(daemon=True, target=event_echo, args=(ping, pong, args.rounds))
    p.start()

    def rt():
        ping.set()
        if not pong.wait(30):
            raise TimeoutError("the echo process stopped answering")
        pong.clear()
    small = one_way_us(rt, args.rounds)
    p.join()
    shm = shared_memory.SharedMemory(create=True, size=MIB)
    try:
        ready, done = ctx.Event(), ctx.Event()
        p = ctx.Process(daemon=True, target=shm_reader, args=(shm.name, ready, done, args.payloads))
        p.start()
        payload = bytes(MIB)
        t = time.perf_counter()
        for _ in range(args.payloads):
            shm.buf[:MIB] = payload
            ready.set()
            if not done.wait(30):
                raise TimeoutError("the reader process stopped answering")
            done.clear()
        emit("shared_memory + Event", small, args.payloads * MIB / (time.perf_counter() - t) / 1e9)
        p.join()
    finally:
        shm.close()
        shm.unlink()


if __name__ == "__main__":
    main()
