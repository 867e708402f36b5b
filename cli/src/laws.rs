//! Amdahl's and Gustafson's laws, the Karp-Flatt metric, and fitting a serial fraction.

/// Amdahl: the speed-up on `p` processors of a job whose serial fraction is `f`.
pub(crate) fn amdahl_speedup(f: f64, p: f64) -> f64 {
    1.0 / (f + (1.0 - f) / p)
}

/// Gustafson: the scaled speed-up on `p` processors when the parallel part grows with `p`.
pub(crate) fn gustafson_speedup(f: f64, p: f64) -> f64 {
    p - f * (p - 1.0)
}

/// Karp-Flatt: the serial fraction implied by a measured speed-up `s` on `p > 1` processors.
pub(crate) fn karp_flatt(s: f64, p: f64) -> f64 {
    (1.0 / s - 1.0 / p) / (1.0 - 1.0 / p)
}

/// The serial fraction that best fits measured `(p, speed-up)` points under Amdahl's law:
/// `1/S - 1/p = f (1 - 1/p)` is linear in `f`, so least squares through the origin gives
/// `f = sum(x y) / sum(x x)` with `x = 1 - 1/p`, `y = 1/S - 1/p`. Clamped to [0, 1].
pub(crate) fn fit_serial_fraction(points: &[(f64, f64)]) -> f64 {
    let (mut xy, mut xx) = (0.0, 0.0);
    for &(p, s) in points.iter().filter(|(p, _)| *p > 1.0) {
        let x = 1.0 - 1.0 / p;
        let y = 1.0 / s - 1.0 / p;
        xy += x * y;
        xx += x * x;
    }
    if xx == 0.0 {
        0.0
    } else {
        (xy / xx).clamp(0.0, 1.0)
    }
}

/// Amdahl's ceiling: the speed-up with infinitely many processors, `1 / f`.
pub(crate) fn amdahl_ceiling(f: f64) -> f64 {
    if f <= 0.0 { f64::INFINITY } else { 1.0 / f }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn amdahl_by_hand() {
        // f = 0.1, p = 4: 1 / (0.1 + 0.9 / 4) = 1 / 0.325 = 3.076923...
        assert!(close(amdahl_speedup(0.1, 4.0), 1.0 / 0.325));
        assert!(close(amdahl_speedup(0.0, 8.0), 8.0));
        assert!(close(amdahl_speedup(1.0, 8.0), 1.0));
        // f = 0.05: the ceiling is 20.
        assert!(close(amdahl_ceiling(0.05), 20.0));
        assert!(amdahl_ceiling(0.0).is_infinite());
    }

    #[test]
    fn gustafson_by_hand() {
        // f = 0.1, p = 4: 4 - 0.1 * 3 = 3.7.
        assert!(close(gustafson_speedup(0.1, 4.0), 3.7));
        assert!(close(gustafson_speedup(0.0, 16.0), 16.0));
    }

    #[test]
    fn karp_flatt_by_hand() {
        // A speed-up of 1.6 on 2 processors: (1/1.6 - 1/2) / (1 - 1/2) = 0.125 / 0.5 = 0.25.
        assert!(close(karp_flatt(1.6, 2.0), 0.25));
        // It inverts Amdahl exactly.
        for f in [0.0, 0.02, 0.3] {
            for p in [2.0, 3.0, 16.0] {
                assert!(close(karp_flatt(amdahl_speedup(f, p), p), f));
            }
        }
    }

    #[test]
    fn the_fit_recovers_a_known_fraction() {
        let points: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0, 16.0]
            .iter()
            .map(|&p| (p, amdahl_speedup(0.07, p)))
            .collect();
        assert!(close(fit_serial_fraction(&points), 0.07));
        // By hand, one point: p = 2, S = 1.6: x = 0.5, y = 0.125, f = 0.0625 / 0.25 = 0.25.
        assert!(close(fit_serial_fraction(&[(2.0, 1.6)]), 0.25));
        assert_eq!(fit_serial_fraction(&[(1.0, 1.0)]), 0.0);
    }
}
