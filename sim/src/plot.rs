//! The SVG plot: one panel per policy, demand and serving capacity (work
//! units per second, left axis) and utilisation (%, right axis) over time.

use std::path::Path;

use plotters::prelude::*;

use crate::run::Outcome;

const PANEL_HEIGHT: u32 = 300;
const WIDTH: u32 = 1000;
/// More points than this per line are thinned (every k-th point) to keep
/// a two-week plot a few hundred kilobytes.
const MAX_POINTS: usize = 2000;

/// Writes the plot of `outcomes` (each with its series) to `path`.
pub fn write_svg(
    path: &Path,
    title: &str,
    outcomes: &[Outcome],
    capacity: f64,
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("cannot plot to {}: {e}", path.display());
    let height = PANEL_HEIGHT * outcomes.len().max(1) as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((outcomes.len().max(1), 1));
    for (o, area) in outcomes.iter().zip(panels.iter()) {
        let Some(first) = o.series.first() else {
            continue;
        };
        let t0 = first.t;
        let k = o.series.len().div_ceil(MAX_POINTS).max(1);
        let pts: Vec<_> = o.series.iter().step_by(k).collect();
        let hours = |t: i64| (t - t0) as f64 / 3600.0;
        let t_end = o.series.last().map_or(1.0, |p| hours(p.t)).max(1.0 / 60.0);
        let top = o
            .series
            .iter()
            .map(|p| p.demand.max(f64::from(p.capacity) * capacity))
            .fold(1.0, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!(
                    "{title}: {} ({:.1} instance-hours, {} s overloaded, {} flaps)",
                    o.policy, o.instance_hours, o.overloaded_secs, o.flaps
                ),
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .right_y_label_area_size(50)
            .build_cartesian_2d(0.0..t_end, 0.0..top)
            .map_err(|e| err(&e))?
            .set_secondary_coord(0.0..t_end, 0.0..110.0);
        chart
            .configure_mesh()
            .x_desc("hours")
            .y_desc("units/s")
            .disable_mesh()
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .configure_secondary_axes()
            .y_desc("utilisation %")
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (hours(p.t), p.demand)),
                BLACK.stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label("demand")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK));
        chart
            .draw_series(LineSeries::new(
                pts.iter()
                    .map(|p| (hours(p.t), f64::from(p.capacity) * capacity)),
                BLUE.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label("capacity (all instances)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
        chart
            .draw_secondary_series(LineSeries::new(
                pts.iter().map(|p| (hours(p.t), p.utilisation)),
                RED.mix(0.6).stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label("utilisation %")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}
