//! Timing that a person can trust on a noisy machine: variants interleaved round by round,
//! tiny calls batched so that each sample lasts a few milliseconds, medians reported.

use std::time::{Duration, Instant};

/// One thing to time: a name and a closure that does one call and returns its answer.
pub(crate) struct Variant<'a, T> {
    pub(crate) name: &'static str,
    pub(crate) run: Box<dyn FnMut() -> T + 'a>,
}

/// The median time of one call of a variant.
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    pub(crate) name: &'static str,
    pub(crate) median: Duration,
}

/// Idle time between two variants' samples.
const SETTLE: Duration = Duration::from_millis(3);

/// Times every variant over `rounds` interleaved rounds. Each sample batches enough calls to
/// last about `min_sample`. `answers` receives each variant's answer, to check that they agree.
pub(crate) fn interleaved<T>(
    variants: &mut [Variant<'_, T>],
    rounds: usize,
    min_sample: Duration,
    answers: &mut Vec<T>,
) -> Vec<Timing> {
    // Warm up and size the batches.
    let mut batch = Vec::with_capacity(variants.len());
    answers.clear();
    for v in variants.iter_mut() {
        std::hint::black_box((v.run)());
        let t = Instant::now();
        answers.push(std::hint::black_box((v.run)()));
        let one = t.elapsed().max(Duration::from_nanos(50));
        batch.push(((min_sample.as_nanos() / one.as_nanos()).max(1) as usize).min(1_000_000));
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); variants.len()];
    for _ in 0..rounds.max(1) {
        for (i, v) in variants.iter_mut().enumerate() {
            // Let the previous variant's idle threads (rayon's, our workers) go to sleep, so
            // that no variant pays for another's spinning.
            std::thread::sleep(SETTLE);
            let t = Instant::now();
            for _ in 0..batch[i] {
                std::hint::black_box((v.run)());
            }
            samples[i].push(t.elapsed() / batch[i] as u32);
        }
    }
    variants
        .iter()
        .zip(samples)
        .map(|(v, mut s)| {
            s.sort();
            Timing {
                name: v.name,
                median: s[s.len() / 2],
            }
        })
        .collect()
}

/// "1 KiB", "64 MiB", ...
pub(crate) fn human_bytes(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// "12.3 µs", "4.56 ms", ...
pub(crate) fn human_time(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1e-6 {
        format!("{:.0} ns", s * 1e9)
    } else if s < 1e-3 {
        format!("{:.2} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}
