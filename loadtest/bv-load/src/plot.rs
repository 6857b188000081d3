//! The report's plots: latency over time and throughput over time, as PNG,
//! with the run's marks (faults on and off) as vertical lines.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context as _};
use plotters::prelude::*;

use crate::report::Report;

/// TrueType fonts tried for the plots' text, in order (Debian's
/// `fonts-dejavu-core` first); `BV_LOAD_FONT` names another.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers a font for `sans-serif` once; the error says which files were
/// tried.
fn font() -> anyhow::Result<()> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let chosen = std::env::var("BV_LOAD_FONT").ok();
        let candidates: Vec<&str> = chosen
            .as_deref()
            .into_iter()
            .chain(FONTS.iter().copied())
            .collect();
        for path in &candidates {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                    .map_err(|_| format!("{path} is not a TrueType font"));
            }
        }
        Err(format!(
            "no font for the plots' text: tried {} (install Debian's fonts-dejavu-core, or set \
             BV_LOAD_FONT to a .ttf file)",
            candidates.join(", ")
        ))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

const SIZE: (u32, u32) = (1200, 600);

/// A line: its legend, its points, its colour.
type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

/// p50 and p99 latency per second.
pub fn latency(report: &Report, path: &Path) -> anyhow::Result<()> {
    let series = [
        (
            "p50",
            report
                .timeline
                .iter()
                .map(|s| (s.t as f64, s.p50_ms))
                .collect::<Vec<_>>(),
            BLUE,
        ),
        (
            "p99",
            report
                .timeline
                .iter()
                .map(|s| (s.t as f64, s.p99_ms))
                .collect(),
            RED,
        ),
    ];
    draw(report, path, "latency (ms)", &series)
}

/// Requests, server-side failures and refusals per second.
pub fn throughput(report: &Report, path: &Path) -> anyhow::Result<()> {
    let pick = |f: fn(&crate::report::Second) -> u64| {
        report
            .timeline
            .iter()
            .map(|s| (s.t as f64, f(s) as f64))
            .collect::<Vec<_>>()
    };
    let series = [
        ("requests/s", pick(|s| s.requests), BLUE),
        ("server failures/s", pick(|s| s.server_failures), RED),
        (
            "refused (4xx)/s",
            pick(|s| s.refused),
            RGBColor(230, 150, 0),
        ),
    ];
    draw(report, path, "per second", &series)
}

fn draw(report: &Report, path: &Path, y_label: &str, series: &[Series<'_>]) -> anyhow::Result<()> {
    font()?;
    let fail = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let x_max = report.duration_s.max(1.0);
    let y_max = series
        .iter()
        .flat_map(|(_, points, _)| points.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: {y_label}", report.name), ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| fail(&e))?;
    for (name, points, color) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    for mark in &report.marks {
        let grey = RGBColor(90, 90, 90);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(mark.at_s, 0.0), (mark.at_s, y_max)],
                grey.stroke_width(1),
            )))
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                mark.label.clone(),
                (mark.at_s, y_max * 0.97),
                ("sans-serif", 13).into_font().color(&grey),
            )))
            .map_err(|e| fail(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().context("writing the PNG")?;
    Ok(())
}
