//! `SharedMap` across processes: four writers, one SIGKILLed in the middle of its inserts
//! (inside the map's lock in at least one round), lose no committed entry; a shared counter
//! through `update` loses no increment.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmpar::{ErrorKind, Process, SharedMap, SharedValue};

/// Keys per writer, and rounds of rewriting them all.
const KEYS: u32 = 100;
const ROUNDS: u32 = 40;

type Map = SharedMap<(u32, u32), Vec<u8>>;

/// Writer `id`'s value for key `k` in round `r`: 1 KiB that names all three.
fn value(id: u32, r: u32, k: u32) -> Vec<u8> {
    let mut v = vec![(id * 7 + k) as u8; 1024];
    v[..4].copy_from_slice(&r.to_le_bytes());
    v
}

/// Rewrites its keys round after round (the arena wears out and is compacted again and
/// again), counting each insert that returned.
fn writer((id, map, done): (u32, Map, SharedValue<AtomicU64>)) {
    for r in 0..ROUNDS {
        for k in 0..KEYS {
            map.insert(&(id, k), &value(id, r, k)).unwrap();
            done.store(u64::from(r * KEYS + k + 1), Ordering::SeqCst);
        }
    }
}

/// The round whose value key `k` must hold after `done` inserts returned: the last one that
/// wrote it, or `None` before its first write.
fn last_round(done: u64, k: u32) -> Option<u32> {
    let n = u64::from(KEYS);
    let k = u64::from(k);
    (done > k).then(|| ((done - 1 - k) / n) as u32)
}

#[test]
fn four_writers_one_killed_mid_insert_lose_no_committed_entry() {
    let _w = common::watchdog(240, "shared map kill");
    let mut hit_the_lock = 0;
    let mut rounds = 0;
    let started = Instant::now();
    // A kill lands inside the lock in 5-40% of rounds here (more on an idle machine): up to
    // 150 rounds or two minutes, ending early once it has landed there three times.
    for round in 0..150 {
        rounds += 1;
        // Room for every key, and for a few hundred records more: a compaction every few
        // hundred inserts.
        let map = Map::new(4 * KEYS as usize, 4 * KEYS as usize * 1100 + (300 << 10)).unwrap();
        let counters: Vec<SharedValue<AtomicU64>> = (0..4)
            .map(|_| SharedValue::new(AtomicU64::new(0)).unwrap())
            .collect();
        let mut writers: Vec<Process<()>> = (0..4u32)
            .map(|id| {
                Process::start(writer, (id, map.clone(), counters[id as usize].clone())).unwrap()
            })
            .collect();
        // Kill writer 0 somewhere past its first round, a little later each time.
        let at = u64::from(KEYS) + 37 * (round as u64 % 50) + 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        while counters[0].load(Ordering::SeqCst) < at {
            assert!(Instant::now() < deadline, "writer 0 made no progress");
            std::hint::spin_loop();
        }
        writers[0].kill().unwrap();
        let killed_after = {
            let victim = writers.remove(0);
            let exit = victim.join().unwrap();
            let done = counters[0].load(Ordering::SeqCst);
            // On a loaded machine it may finish before the kill lands: then it is no victim.
            let finished = done == u64::from(ROUNDS * KEYS);
            assert!(
                exit == shmpar::Exit::Signaled(9) || (finished && exit == shmpar::Exit::Ok),
                "{exit:?} after {done} inserts"
            );
            done
        };
        for w in writers {
            w.join().unwrap().into_result().unwrap();
        }
        // Every survivor's last value for every key; the victim's last committed value (or the
        // one it was writing when it died) for every key.
        for id in 1..4u32 {
            for k in 0..KEYS {
                let got = map.get(&(id, k)).unwrap();
                assert_eq!(got, Some(value(id, ROUNDS - 1, k)), "writer {id} key {k}");
            }
        }
        for k in 0..KEYS {
            let r = last_round(killed_after, k).expect("past the first round");
            let got = map.get(&(0, k)).unwrap().expect("a committed key is there");
            let in_flight = u64::from((r + 1) * KEYS + k) == killed_after;
            assert!(
                got == value(0, r, k) || (in_flight && got == value(0, r + 1, k)),
                "round {round}: key {k} after {killed_after} inserts holds round {}",
                u32::from_le_bytes(got[..4].try_into().unwrap())
            );
        }
        assert_eq!(map.len().unwrap(), 4 * KEYS as usize);
        assert_eq!(map.entries().unwrap().len(), 4 * KEYS as usize);
        hit_the_lock += map.recovered();
        // Enough once a kill has landed inside the lock (and the map has been checked after
        // it) a few times.
        if hit_the_lock >= 3 || started.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    eprintln!("{rounds} rounds, {hit_the_lock} kills inside the map's lock");
    assert!(
        hit_the_lock >= 1,
        "no kill landed while the writer held the map's lock: the test proved nothing"
    );
}

#[test]
fn a_counter_through_update_loses_no_increment() {
    let _w = common::watchdog(60, "shared map counter");
    let map = SharedMap::<String, u64>::new(4, 1024).unwrap();
    let children: Vec<Process<()>> = (0..4)
        .map(|_| {
            Process::start(
                |m: SharedMap<String, u64>| {
                    for _ in 0..2000 {
                        m.update(&"hits".to_string(), |n| n.unwrap_or(0) + 1)
                            .unwrap();
                    }
                },
                map.clone(),
            )
            .unwrap()
        })
        .collect();
    for c in children {
        c.join().unwrap().into_result().unwrap();
    }
    assert_eq!(map.get(&"hits".to_string()).unwrap(), Some(8000));
}

#[test]
fn a_full_map_says_full_and_keeps_what_it_has() {
    let map = SharedMap::<u32, u32>::new(3, 1024).unwrap();
    for k in 0..3 {
        map.insert(&k, &k).unwrap();
    }
    assert_eq!(map.insert(&9, &9).unwrap_err().kind(), ErrorKind::Full);
    // Replacing an existing key is no new entry.
    assert_eq!(map.insert(&1, &10).unwrap(), Some(1));
    let mut all = map.entries().unwrap();
    all.sort_unstable();
    assert_eq!(all, [(0, 0), (1, 10), (2, 2)]);
}
