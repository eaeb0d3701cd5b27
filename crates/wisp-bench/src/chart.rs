//! The chart: every measured figure's median as a horizontal bar on a log scale, with a line
//! out to its p90, coloured by who did the work (Wisp, a peer, the floor or a direct path).
//!
//! Text is drawn with ab_glyph from a TrueType file read at run time (DejaVu Sans from Debian's
//! `fonts-dejavu-core` by default), not through fontconfig: plotters' default font stack needs
//! system libraries at build time, and a missing font must cost the chart, not the run.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::stats::Figure;

/// Where the font is looked for, after `$WISP_BENCH_FONT`.
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

const FONT: &str = "sans-serif";

/// Registers the font once per process (plotters keeps fonts by name for good).
fn font() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = std::env::var("WISP_BENCH_FONT")
            .ok()
            .into_iter()
            .chain(FONTS.iter().map(|s| s.to_string()))
            .find(|p| Path::new(p).is_file())
            .ok_or("no TrueType font (install fonts-dejavu-core or set WISP_BENCH_FONT)")?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
        // plotters wants the font for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| format!("{path} is not a usable font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

fn colour(name: &str) -> RGBColor {
    if name.starts_with("wisp") {
        RGBColor(31, 119, 180)
    } else if name.starts_with("peer") {
        RGBColor(255, 127, 14)
    } else {
        RGBColor(127, 127, 127)
    }
}

/// Writes the chart of `figs` (skipped ones left out) to `path` as a PNG.
pub fn write(path: &Path, title: &str, figs: &[Figure]) -> Result<()> {
    font()?;
    let figs: Vec<&Figure> = figs
        .iter()
        .filter(|f| f.skipped.is_none() && f.median_ms > 0.0 && f.median_ms.is_finite())
        .collect();
    if figs.is_empty() {
        bail!("nothing measured to chart");
    }
    let lo = figs.iter().map(|f| f.median_ms).fold(f64::MAX, f64::min) / 2.0;
    let hi = figs
        .iter()
        .map(|f| f.p90_ms.max(f.median_ms))
        .fold(0.0, f64::max)
        * 2.0;
    let n = figs.len();
    let height = (n as u32) * 22 + 120;
    let root = BitMapBackend::new(path, (1500, height)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the chart: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(520)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n - 1).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => {
                n.checked_sub(i + 1)
                    .and_then(|k| figs.get(k))
                    .map_or(String::new(), |f| {
                        let mut s = f.name.clone();
                        if s.chars().count() > 70 {
                            s = s.chars().take(69).collect::<String>() + "…";
                        }
                        s
                    })
            }
            _ => String::new(),
        })
        .y_label_style((FONT, 13))
        .x_desc("milliseconds (log scale): bar = median, line = p90")
        .x_label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(err)?;
    // The first figure at the top: row i from the bottom is figure n-1-i.
    chart
        .draw_series(figs.iter().enumerate().map(|(k, f)| {
            let i = n - 1 - k;
            let mut bar = Rectangle::new(
                [
                    (lo, SegmentValue::Exact(i)),
                    (f.median_ms, SegmentValue::Exact(i + 1)),
                ],
                colour(&f.name).filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            bar
        }))
        .map_err(err)?;
    chart
        .draw_series(figs.iter().enumerate().map(|(k, f)| {
            let i = n - 1 - k;
            PathElement::new(
                vec![
                    (f.median_ms, SegmentValue::CenterOf(i)),
                    (f.p90_ms.max(f.median_ms), SegmentValue::CenterOf(i)),
                ],
                BLACK.stroke_width(2),
            )
        }))
        .map_err(err)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Renders a small chart; without a font on the host the chart is skipped with a reason.
    #[test]
    fn renders_a_png() {
        let figs = [
            Figure::from_samples("wisp: a", &[Duration::from_millis(3)]),
            Figure::from_samples("peer: b", &[Duration::from_millis(300)]),
            Figure::from_samples("floor: c", &[Duration::from_micros(1500)]),
            Figure::skipped("peer: d", "not installed".into()),
        ];
        let dir = std::env::temp_dir().join(format!("wisp-bench-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("chart.png");
        match write(&p, "test", &figs) {
            Ok(()) => {
                let png = std::fs::read(&p).unwrap();
                assert_eq!(&png[1..4], b"PNG");
            }
            Err(e) => assert!(e.to_string().contains("font"), "{e}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
