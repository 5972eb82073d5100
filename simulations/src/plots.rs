//! SVG plots of a report, one curve per configuration (plotters, SVG backend only: no fonts or
//! system libraries): queue length, pool sizes and allocated cpu over virtual time (from the
//! sampled [`TimeSeries`](crate::model::TimeSeries), at most `SAMPLES_MAX` points a run) and the
//! wait-time CDF (at most `CDF_POINTS` points a run).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::scenario::Report;

/// Most points of a wait-time CDF curve.
pub const CDF_POINTS: usize = 500;

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

type Curve = (String, Vec<(f64, f64)>);

/// Writes `<scenario>-queue.svg`, `-pools.svg`, `-utilisation.svg` and `-wait-cdf.svg` into
/// `dir`; returns their paths.
pub fn write(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let span_ms = report
        .runs
        .iter()
        .filter_map(|r| r.series.samples.last())
        .map(|s| s.t_ms)
        .max()
        .unwrap_or(0);
    let (unit_ms, unit) = if span_ms > 4 * 3_600_000 {
        (3_600_000.0, "hours")
    } else if span_ms > 600_000 {
        (60_000.0, "minutes")
    } else {
        (1_000.0, "seconds")
    };
    let over_time = |f: &dyn Fn(&crate::model::Sample) -> f64| -> Vec<Curve> {
        report
            .runs
            .iter()
            .map(|r| {
                let pts = r
                    .series
                    .samples
                    .iter()
                    .map(|s| (s.t_ms as f64 / unit_ms, f(s)))
                    .collect();
                (r.name.clone(), pts)
            })
            .collect()
    };
    let name = &report.scenario;
    let x = format!("virtual time ({unit})");
    let mut written = Vec::new();
    let mut plot = |file: String, title: String, x: &str, y: &str, curves: Vec<Curve>, log_x| {
        let p = dir.join(file);
        line_chart(&p, &title, x, y, &curves, log_x)?;
        written.push(p);
        anyhow::Ok(())
    };
    plot(
        format!("{name}-queue.svg"),
        format!("{name}: pending jobs"),
        &x,
        "pending jobs",
        over_time(&|s| s.pending as f64),
        false,
    )?;
    plot(
        format!("{name}-pools.svg"),
        format!("{name}: workers (registered + provisioning, all pools)"),
        &x,
        "workers",
        over_time(&|s| {
            (s.registered.iter().sum::<u32>() + s.provisioning.iter().sum::<u32>()) as f64
        }),
        false,
    )?;
    plot(
        format!("{name}-utilisation.svg"),
        format!("{name}: allocated cpu of registered workers"),
        &x,
        "allocated cpu %",
        over_time(&|s| s.allocated_pct),
        false,
    )?;
    let cdfs = report
        .runs
        .iter()
        .map(|r| {
            let mut waits: Vec<f64> = r
                .jobs
                .iter()
                .filter_map(|j| {
                    j.start_ms
                        .map(|s| ((s - j.arrival_ms) as f64 / 1000.0).max(1.0))
                })
                .collect();
            waits.sort_by(f64::total_cmp);
            let n = waits.len();
            let pts = (0..=CDF_POINTS.min(n.saturating_sub(1)))
                .map(|k| {
                    let i = k * n.saturating_sub(1) / CDF_POINTS.min(n.saturating_sub(1)).max(1);
                    (waits[i], (i + 1) as f64 * 100.0 / n as f64)
                })
                .collect();
            (r.name.clone(), if n == 0 { Vec::new() } else { pts })
        })
        .collect();
    plot(
        format!("{name}-wait-cdf.svg"),
        format!("{name}: wait-time CDF (started jobs)"),
        "wait (s, log scale; waits under 1 s shown at 1 s)",
        "% of jobs",
        cdfs,
        true,
    )?;
    Ok(written)
}

fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    curves: &[Curve],
    log_x: bool,
) -> anyhow::Result<()> {
    let pts = || curves.iter().flat_map(|(_, p)| p.iter());
    let x_max = pts().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let y_max = pts().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.05;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    if log_x {
        let chart = builder
            .build_cartesian_2d((1.0..x_max.max(10.0)).log_scale(), 0.0..y_max)
            .map_err(plot_err)?;
        draw_curves(chart, x_desc, y_desc, curves)?;
    } else {
        let chart = builder
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(plot_err)?;
        draw_curves(chart, x_desc, y_desc, curves)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// The mesh, one line per curve and the legend, on either kind of x axis.
fn draw_curves<'a, X>(
    mut chart: ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<X, plotters::coord::types::RangedCoordf64>,
    >,
    x_desc: &str,
    y_desc: &str,
    curves: &[Curve],
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(plot_err)?;
    for (i, (name, p)) in curves.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(p.iter().copied(), c.stroke_width(2)))
            .map_err(plot_err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
    }
    legend(&mut chart)
}

fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e:?}")
}
