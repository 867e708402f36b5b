//! Sum of f64 at 1 KiB, 64 KiB, 1 MiB, 64 MiB and 512 MiB: serial ndarray `sum()`, rayon over
//! the same chunks with the same kernel, and shmpar's worker processes, in one run.
//!
//! `cargo bench --bench reduce`. The shmpar workers are forked before rayon's pool exists.
//! rayon gets at least one piece per thread, so that at small sizes it really runs in
//! parallel (a single piece would run inline and measure serial time).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::{ArrayView1, Ix1};
use rayon::prelude::*;
use shmpar::{Pool, SharedArray};

const SIZES: [(usize, &str); 5] = [
    (1 << 10, "1KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
    (64 << 20, "64MiB"),
    (512 << 20, "512MiB"),
];

fn sum(c: &mut Criterion) {
    let pool = Pool::new(2).expect("pool");
    let threads = pool.workers();
    let rayon_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("rayon");
    let rows_per_chunk = pool.config().chunk_bytes_setting() / 8;
    for (bytes, label) in SIZES {
        let n = bytes / 8;
        let mut a = SharedArray::<f64, Ix1>::zeros(n).expect("array");
        // Touch every page before timing.
        a.as_slice_mut()
            .iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = (i % 977) as f64);
        let piece = rows_per_chunk.min(n.div_ceil(threads)).max(1);
        let mut g = c.benchmark_group(format!("sum_f64/{label}"));
        g.throughput(Throughput::Bytes(bytes as u64));
        if bytes >= 64 << 20 {
            g.sample_size(10).measurement_time(Duration::from_secs(4));
        }
        g.bench_function("serial", |b| b.iter(|| black_box(a.view().sum())));
        let slice = a.as_slice();
        g.bench_function("rayon", |b| {
            b.iter(|| {
                rayon_pool.install(|| {
                    slice
                        .par_chunks(piece)
                        .map(|c| ArrayView1::from(c).sum())
                        .sum::<f64>()
                })
            })
        });
        g.bench_function("shmpar", |b| {
            b.iter(|| {
                pool.par_reduce(&a, |c| c.sum(), |x, y| x + y)
                    .expect("par_reduce")
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = sum
}
criterion_main!(benches);
