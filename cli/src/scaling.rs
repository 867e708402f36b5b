//! Strong scaling (fixed work: Amdahl), weak scaling (work grows with the processes:
//! Gustafson), and what happens past the number of cores; a table and an SVG plot.

use std::path::Path;
use std::time::Instant;

use ndarray::Ix1;
use plotters::prelude::*;
use serde::Serialize;
use shmpar::{Pool, SharedArray};

use crate::laws::{
    amdahl_ceiling, amdahl_speedup, fit_serial_fraction, gustafson_speedup, karp_flatt,
};
use crate::{CliResult, output};

/// What is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ScalingWorkload {
    /// Monte Carlo pi (compute-bound).
    Pi,
    /// The sum of an f64 array (memory-bound).
    Sum,
}

/// A row as `--json` prints it.
#[derive(Debug, Serialize)]
struct Record {
    demo: &'static str,
    workload: &'static str,
    procs: usize,
    cores: usize,
    strong_s: f64,
    weak_s: f64,
    speedup: f64,
    scaled_speedup: f64,
    efficiency: f64,
    karp_flatt: Option<f64>,
}

/// One row: `p` processes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Point {
    pub(crate) procs: usize,
    pub(crate) strong_s: f64,
    pub(crate) weak_s: f64,
}

/// Units of work: pi samples, or f64 elements of the array to sum.
fn unit(w: ScalingWorkload) -> u64 {
    match w {
        ScalingWorkload::Pi => 100_000_000,
        ScalingWorkload::Sum => 16 << 20,
    }
}

/// Times one run of `amount` units of work.
fn time_once(
    pool: &Pool,
    w: ScalingWorkload,
    amount: u64,
    arrays: &mut Vec<SharedArray<f64, Ix1>>,
) -> shmpar::Result<f64> {
    match w {
        ScalingWorkload::Pi => {
            let t = Instant::now();
            shmpar_cli::montecarlo::estimate_pi(pool, amount, 1)?;
            Ok(t.elapsed().as_secs_f64())
        }
        ScalingWorkload::Sum => {
            let n = amount as usize;
            if arrays.iter().all(|a| a.len() != n) {
                let mut a = SharedArray::<f64, Ix1>::zeros(n)?;
                a.as_slice_mut().fill(1.0);
                arrays.push(a);
            }
            let a = arrays.iter().find(|a| a.len() == n).expect("made above");
            let t = Instant::now();
            pool.par_reduce(a, |c| c.sum(), |x, y| x + y)?;
            Ok(t.elapsed().as_secs_f64())
        }
    }
}

/// Measures 1..=max_procs processes: `(procs, strong time, weak time)`, each the best of five
/// runs, the runs interleaved across the process counts so that a noisy moment on a shared
/// machine does not land on one count only.
pub(crate) fn measure(
    w: ScalingWorkload,
    max_procs: usize,
) -> shmpar::Result<Vec<(usize, f64, f64)>> {
    let mut arrays = Vec::new();
    let pools = (1..=max_procs)
        .map(Pool::new)
        .collect::<shmpar::Result<Vec<_>>>()?;
    let mut best = vec![(f64::MAX, f64::MAX); max_procs];
    for round in 0..6 {
        for (i, pool) in pools.iter().enumerate() {
            let p = i as u64 + 1;
            let strong = time_once(pool, w, 2 * unit(w), &mut arrays)?;
            let weak = time_once(pool, w, unit(w) * p, &mut arrays)?;
            if round > 0 {
                // Round 0 warms up: workers fault in their page tables.
                best[i] = (best[i].0.min(strong), best[i].1.min(weak));
            }
        }
    }
    Ok(best
        .iter()
        .enumerate()
        .map(|(i, &(s, wk))| (i + 1, s, wk))
        .collect())
}

/// Speed-ups from times: strong `T(1)/T(p)`, weak (scaled) `p * T_w(1) / T_w(p)`.
pub(crate) fn speedups(times: &[(usize, f64, f64)]) -> Vec<Point> {
    let (t1, w1) = (times[0].1, times[0].2);
    times
        .iter()
        .map(|&(p, t, tw)| Point {
            procs: p,
            strong_s: t1 / t,
            weak_s: p as f64 * w1 / tw,
        })
        .collect()
}

/// The SVG plot: measured speed-ups, the ideal line, the fitted Amdahl and Gustafson curves,
/// and the oversubscribed region (more processes than cores) shaded.
pub(crate) fn render_svg(
    points: &[Point],
    cores: usize,
    f_amdahl: f64,
    f_gustafson: f64,
    title: &str,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let max_p = points.iter().map(|p| p.procs).max().unwrap_or(1) as f64;
        let top = points
            .iter()
            .map(|p| p.weak_s.max(p.strong_s))
            .fold(max_p, f64::max)
            * 1.1;
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(1.0..max_p, 0.0..top)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("processes")
            .y_desc("speed-up over 1 process")
            .draw()
            .map_err(|x| e(&x))?;
        if max_p > cores as f64 {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(cores as f64, 0.0), (max_p, top)],
                    RGBColor(255, 220, 220).filled(),
                )))
                .map_err(|x| e(&x))?
                .label(format!(
                    "oversubscribed: more processes than the {cores} cores"
                ))
                .legend(|(x, y)| {
                    Rectangle::new(
                        [(x, y - 5), (x + 15, y + 5)],
                        RGBColor(255, 220, 220).filled(),
                    )
                });
        }
        let steps: Vec<f64> = (0..=100)
            .map(|i| 1.0 + (max_p - 1.0) * f64::from(i) / 100.0)
            .collect();
        chart
            .draw_series(LineSeries::new(
                steps.iter().map(|&p| (p, p)),
                BLACK.stroke_width(1),
            ))
            .map_err(|x| e(&x))?
            .label("ideal (speed-up = processes)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLACK));
        chart
            .draw_series(LineSeries::new(
                steps.iter().map(|&p| (p, amdahl_speedup(f_amdahl, p))),
                BLUE.stroke_width(1),
            ))
            .map_err(|x| e(&x))?
            .label(format!("Amdahl fit, serial fraction {f_amdahl:.3}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLUE));
        chart
            .draw_series(LineSeries::new(
                steps
                    .iter()
                    .map(|&p| (p, gustafson_speedup(f_gustafson, p))),
                GREEN.stroke_width(1),
            ))
            .map_err(|x| e(&x))?
            .label(format!("Gustafson fit, serial fraction {f_gustafson:.3}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], GREEN));
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.procs as f64, p.strong_s)),
                RED.stroke_width(3),
            ))
            .map_err(|x| e(&x))?
            .label("measured, fixed work (strong scaling)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], RED.stroke_width(3)));
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.procs as f64, p.strong_s), 4, RED.filled())),
            )
            .map_err(|x| e(&x))?;
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.procs as f64, p.weak_s)),
                MAGENTA.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label("measured, work grows with processes (weak scaling)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], MAGENTA.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

/// `scaling [--max-procs N] [--workload pi|sum] [--svg FILE] [--json]`.
pub(crate) fn run(
    w: ScalingWorkload,
    max_procs: Option<usize>,
    svg_path: Option<&Path>,
    json: bool,
) -> CliResult {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max_procs = max_procs.unwrap_or(2 * cores).max(1);
    let name = match w {
        ScalingWorkload::Pi => "pi",
        ScalingWorkload::Sum => "sum",
    };
    let times = measure(w, max_procs)?;
    let points = speedups(&times);
    let within: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.procs <= cores)
        .map(|p| (p.procs as f64, p.strong_s))
        .collect();
    let f = fit_serial_fraction(&within);
    // Gustafson: S = p - f (p - 1) is linear in f: least squares through the origin.
    let (mut xy, mut xx) = (0.0, 0.0);
    for p in points.iter().filter(|p| p.procs > 1 && p.procs <= cores) {
        let x = p.procs as f64 - 1.0;
        xy += x * (p.procs as f64 - p.weak_s);
        xx += x * x;
    }
    let fg = if xx > 0.0 {
        (xy / xx).clamp(0.0, 1.0)
    } else {
        0.0
    };
    if json {
        for (pt, t) in points.iter().zip(&times) {
            output::json_line(&Record {
                demo: "scaling",
                workload: name,
                procs: pt.procs,
                cores,
                strong_s: t.1,
                weak_s: t.2,
                speedup: pt.strong_s,
                scaled_speedup: pt.weak_s,
                efficiency: pt.strong_s / pt.procs as f64,
                karp_flatt: (pt.procs > 1).then(|| karp_flatt(pt.strong_s, pt.procs as f64)),
            })?;
        }
    } else {
        let work = match w {
            ScalingWorkload::Pi => format!("{} samples", 2 * unit(w)),
            ScalingWorkload::Sum => format!("a {} MiB array", (2 * unit(w) * 8) >> 20),
        };
        println!("Scaling of {name} on {cores} cores, 1 to {max_procs} processes (best of 5):");
        println!(
            "  strong: fixed work ({work}); weak: {} per process\n",
            match w {
                ScalingWorkload::Pi => format!("{} samples", unit(w)),
                ScalingWorkload::Sum => format!("{} MiB", (unit(w) * 8) >> 20),
            }
        );
        let mut table = output::table(&[
            "procs",
            "time",
            "speed-up",
            "efficiency",
            "Karp-Flatt",
            "Amdahl",
            "weak time",
            "scaled",
            "Gustafson",
            "note",
        ]);
        output::left(&mut table, 9);
        for (pt, t) in points.iter().zip(&times) {
            let p = pt.procs as f64;
            table.add_row(vec![
                pt.procs.to_string(),
                format!("{:.1}ms", t.1 * 1e3),
                format!("{:.2}x", pt.strong_s),
                format!("{:.0}%", 100.0 * pt.strong_s / p),
                if pt.procs > 1 {
                    format!("{:.3}", karp_flatt(pt.strong_s, p))
                } else {
                    "-".into()
                },
                format!("{:.2}x", amdahl_speedup(f, p)),
                format!("{:.1}ms", t.2 * 1e3),
                format!("{:.2}x", pt.weak_s),
                format!("{:.2}x", gustafson_speedup(fg, p)),
                if pt.procs > cores {
                    "oversubscribed".into()
                } else {
                    String::new()
                },
            ]);
        }
        println!("{table}");
        let ceiling = amdahl_ceiling(f);
        let ceiling = if ceiling.is_finite() && ceiling < 1000.0 {
            format!("no number of processes can go past {ceiling:.1}x")
        } else {
            "no ceiling shows up at this scale".to_string()
        };
        println!(
            "\nAmdahl: fitted serial fraction {f:.3} (up to {cores} processes): {ceiling}.\n\
             Gustafson: when the work grows with the processes, the scaled speed-up stays near p - {fg:.3} (p - 1).\n\
             Past {cores} processes the cores are shared: each process waits for a turn, so time does not fall, and\n\
             switching between them costs a little: more processes than cores never helps."
        );
    }
    if let Some(path) = svg_path {
        let svg = render_svg(
            &points,
            cores,
            f,
            fg,
            &format!("shmpar scaling: {name} on {cores} cores"),
        )?;
        std::fs::write(path, svg)?;
        if !json {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_svg_is_well_formed() {
        let points = [
            Point {
                procs: 1,
                strong_s: 1.0,
                weak_s: 1.0,
            },
            Point {
                procs: 2,
                strong_s: 1.9,
                weak_s: 1.95,
            },
            Point {
                procs: 3,
                strong_s: 1.85,
                weak_s: 1.9,
            },
            Point {
                procs: 4,
                strong_s: 1.8,
                weak_s: 1.85,
            },
        ];
        let svg = render_svg(&points, 2, 0.05, 0.03, "test").unwrap();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
        assert!(texts.iter().any(|t| t.contains("Amdahl fit")), "{texts:?}");
        assert!(texts.iter().any(|t| t.contains("oversubscribed")));
        assert!(
            doc.descendants()
                .filter(|n| n.has_tag_name("polyline"))
                .count()
                >= 4
        );
    }

    #[test]
    fn speedups_from_times() {
        let pts = speedups(&[(1, 2.0, 1.0), (2, 1.0, 1.0), (4, 1.0, 2.0)]);
        assert_eq!(pts[1].strong_s, 2.0);
        assert_eq!(pts[1].weak_s, 2.0);
        assert_eq!(pts[2].weak_s, 2.0);
    }
}
