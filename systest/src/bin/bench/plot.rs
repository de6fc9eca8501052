//! The figures of a run, as SVG next to `results.json`: latency distributions per stage (log
//! scale) and throughput over time.

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;

const SIZE: (u32, u32) = (900, 540);
/// The lowest latency drawn: the log scale needs a floor.
const FLOOR_MS: f64 = 0.1;

type Series = (String, Vec<(f64, f64)>);
type Canvas<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn canvas(path: &Path) -> Result<Canvas<'_>, Box<dyn Error>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root)
}

fn builder<'a, 'b>(root: &'a Canvas<'b>, title: &str) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60);
    builder
}

/// Cumulative distributions, latency on a log scale.
pub fn latency_cdf(path: &Path, title: &str, series: &[Series]) -> Result<(), Box<dyn Error>> {
    let max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let root = canvas(path)?;
    let mut chart =
        builder(&root, title).build_cartesian_2d((FLOOR_MS..max * 1.2).log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("latency, ms (log scale)")
        .y_desc("share at or below")
        .draw()?;
    let lines = series.iter().map(|(name, points)| {
        let line = points.iter().map(|&(x, y)| (x.max(FLOOR_MS), y));
        (name.as_str(), line.collect())
    });
    draw_lines(&mut chart, lines, SeriesLabelPosition::LowerRight)?;
    root.present()?;
    Ok(())
}

/// Requests completed per second over a run, one line per series.
pub fn throughput(
    path: &Path,
    title: &str,
    series: &[(String, Vec<u64>)],
) -> Result<(), Box<dyn Error>> {
    let seconds = series
        .iter()
        .map(|(_, s)| s.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let max = series
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1);
    let root = canvas(path)?;
    let mut chart =
        builder(&root, title).build_cartesian_2d(0u64..seconds as u64 - 1, 0u64..max + max / 10)?;
    chart
        .configure_mesh()
        .x_desc("second of the run")
        .y_desc("requests per second")
        .draw()?;
    let lines = series.iter().map(|(name, per_second)| {
        let line = per_second.iter().enumerate().map(|(s, n)| (s as u64, *n));
        (name.as_str(), line.collect())
    });
    draw_lines(&mut chart, lines, SeriesLabelPosition::MiddleRight)?;
    root.present()?;
    Ok(())
}

/// Each series as a line of its own colour, with the legend at `position`.
fn draw_lines<'a, 'b: 'a, 'n, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
    series: impl Iterator<Item = (&'n str, Vec<(X::ValueType, Y::ValueType)>)>,
    position: SeriesLabelPosition,
) -> Result<(), Box<dyn Error>>
where
    X: Ranged,
    Y: Ranged,
    X::ValueType: Clone + 'static,
    Y::ValueType: Clone + 'static,
{
    for (i, (name, points)) in series.enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
