//! PNG plots of training and evaluation: loss and accuracy curves, the decision regions
//! of a 2-D classifier, and ROC and precision-recall curves.
//!
//! Rendering uses plotters' bitmap backend into memory with an embedded font (DejaVu
//! Sans, `assets/fonts/`), so text renders on machines without system fonts; the image is
//! PNG-encoded in memory and written atomically (a temporary file beside the target, then
//! a rename), so a reader never sees a half-written picture.

use crate::metrics::MetricsLog;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use std::sync::OnceLock;

/// The embedded font (DejaVu Sans 2.37, see `assets/README.md`).
static FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
/// The family name every text style here uses; it resolves to the embedded font.
const FONT: &str = "sans-serif";

/// Grid resolution of [`plot_decision_boundary`]: `GRID x GRID` cells.
pub const GRID: usize = 200;
/// Largest width or height of an image, in pixels.
pub const MAX_SIDE: u32 = 8192;

/// Registers the embedded font with plotters once per process.
fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FONT, FontStyle::Normal, FONT_BYTES)
                .map_err(|_| "the embedded plot font is invalid".to_string())
        })
        .clone()
}

/// Tableau's ten categorical colours (matplotlib's default cycle).
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Colour `i` of the palette (cycling).
fn color(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// Series `i` of `n` on a ramp from dark blue (the first) to orange-red (the last), for
/// many ordered series (the layers of a deep model).
fn ramp_color(i: usize, n: usize) -> RGBColor {
    let t = if n > 1 { i as f64 / (n - 1) as f64 } else { 0.0 };
    let mix = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * t).round() as u8;
    RGBColor(mix(31, 230), mix(60, 85), mix(160, 13))
}

/// Colour `i` blended towards white: `amount` 0 keeps it, 1 gives white.
fn lighten(c: RGBColor, amount: f64) -> RGBColor {
    let mix = |v: u8| (v as f64 + (255.0 - v as f64) * amount).round().clamp(0.0, 255.0) as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

fn draw_err<E: std::fmt::Display>(e: E) -> String {
    format!("cannot draw the plot: {e}")
}

/// Renders `draw` into a `width x height` RGB image and writes it to `path` as a PNG,
/// atomically.
fn render_png<F>(path: &Path, width: u32, height: u32, draw: F) -> Result<(), String>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
{
    let png = render_png_bytes(width, height, draw)?;
    crate::tensors::write_atomic(path, &png)
}

fn render_png_bytes<F>(width: u32, height: u32, draw: F) -> Result<Vec<u8>, String>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
{
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!("a {width}x{height} image is outside 1..={MAX_SIDE} pixels a side"));
    }
    ensure_font()?;
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let backend = BitMapBackend::with_buffer_and_format(&mut rgb, (width, height)).map_err(draw_err)?;
        let root = backend.into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    encode_png(&rgb, width, height)
}

/// Encodes 8-bit RGB pixels as a PNG.
fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Balanced);
    let mut writer = enc.write_header().map_err(|e| format!("cannot encode PNG: {e}"))?;
    writer.write_image_data(rgb).map_err(|e| format!("cannot encode PNG: {e}"))?;
    writer.finish().map_err(|e| format!("cannot encode PNG: {e}"))?;
    Ok(out)
}

/// One named line: `(x, y)` points; a non-finite `y` (or `x`) breaks the line there.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart of a figure: a title, axis labels and its lines.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// Pads `[lo, hi]` by 5% (or widens a degenerate range) so the data does not touch the
/// frame. Errors when the values are too large to plot.
fn padded_range(lo: f64, hi: f64) -> Result<(f64, f64), String> {
    if !lo.is_finite() || !hi.is_finite() {
        return Err("the plotted values are not finite".into());
    }
    let span = hi - lo;
    let scale = lo.abs().max(hi.abs()).max(1.0);
    let (lo, hi) = if span <= scale * 1e-9 {
        let half = (lo.abs() * 0.05).max(scale * 1e-6).max(0.5);
        let mid = lo / 2.0 + hi / 2.0;
        (mid - half, mid + half)
    } else {
        (lo - span * 0.05, hi + span * 0.05)
    };
    if !lo.is_finite() || !hi.is_finite() || !(hi - lo).is_finite() || lo.abs().max(hi.abs()) > 1e30 {
        return Err("the plotted values are too large to plot".into());
    }
    Ok((lo, hi))
}

/// The finite runs of a series' points, for drawing with gaps.
fn segments(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![];
    let mut cur: Vec<(f64, f64)> = vec![];
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            cur.push((x, y));
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A tick label on an axis spanning `span`: few digits, no trailing zeros, and 0 for
/// rounding noise such as `-2.2e-16`.
fn tick_label(v: f64, span: f64) -> String {
    let a = v.abs();
    if a == 0.0 || a < span.abs() * 1e-9 {
        return "0".into();
    }
    if !(1e-4..1e6).contains(&a) {
        return format!("{v:.2e}");
    }
    // Enough decimals to tell ticks about a tenth of the span apart.
    let step = span.abs() / 10.0;
    let decimals =
        if step > 0.0 && step.is_finite() { (1.0 - step.log10().floor()).clamp(0.0, 15.0) as usize } else { 6 };
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { s.as_str() };
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Width for the y tick labels of `[lo, hi]` and the axis description beside them.
fn y_label_area(lo: f64, hi: f64) -> u32 {
    let chars =
        (0..=10).map(|i| tick_label(lo + (hi - lo) * i as f64 / 10.0, hi - lo).chars().count()).max().unwrap_or(4);
    (36 + 9 * chars as u32).clamp(64, 200)
}

/// The corner of the plot area `[x0, x1] x [y0, y1]` where a legend covers the fewest of
/// `points` (the upper right on ties).
fn legend_corner(points: &[(f64, f64)], (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> SeriesLabelPosition {
    let (wx, wy) = ((x1 - x0) * 0.4, (y1 - y0) * 0.35);
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::LowerLeft, false, false),
    ];
    let mut best = (usize::MAX, SeriesLabelPosition::UpperRight);
    for (pos, right, upper) in corners {
        let inside = |&&(x, y): &&(f64, f64)| {
            let in_x = if right { x >= x1 - wx } else { x <= x0 + wx };
            let in_y = if upper { y >= y1 - wy } else { y <= y0 + wy };
            in_x && in_y
        };
        let n = points.iter().filter(inside).count();
        if n < best.0 {
            best = (n, pos);
        }
    }
    best.1
}

/// Points along the lines of `segs` (each segment sampled 8 times), for legend placement.
fn line_samples(segs: &[Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
    let mut out = vec![];
    for seg in segs {
        out.extend(seg.iter().copied());
        for w in seg.windows(2) {
            let ((ax, ay), (bx, by)) = (w[0], w[1]);
            out.extend((1..8).map(|i| {
                let t = i as f64 / 8.0;
                (ax + (bx - ax) * t, ay + (by - ay) * t)
            }));
        }
    }
    out
}

/// How a panel is drawn beyond its data. The default (automatic padded ranges, markers
/// on short series, no diagonal) is that of [`plot_panels`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct PanelStyle {
    /// Fixed x range instead of the data's padded range.
    x_range: Option<(f64, f64)>,
    /// Fixed y range instead of the data's padded range.
    y_range: Option<(f64, f64)>,
    /// Never draw point markers (curves with a point per threshold).
    no_markers: bool,
    /// A dashed grey line from the lower left to the upper right corner of the ranges
    /// (the chance line of a ROC plot).
    diagonal: bool,
    /// Markers only, no lines: a scatter (trials of a search).
    points_only: bool,
    /// A logarithmic y axis: values are drawn at log10(y) with ticks labelled as powers
    /// of ten; values <= 0 break the line.
    log_y: bool,
    /// With more series than a legend shows: colours on a ramp in series order, and a
    /// legend of the first and the last series only.
    ramp: bool,
}

/// The colour of the chance diagonal.
const DIAGONAL: RGBColor = RGBColor(150, 150, 150);

/// Most legend entries a panel shows; with more series the legend is left out.
const MAX_LEGEND: usize = 20;

/// The range of `values` padded by [`padded_range`], or `fixed` when given.
fn axis_range(fixed: Option<(f64, f64)>, values: impl Iterator<Item = f64>) -> Result<(f64, f64), String> {
    if let Some(r) = fixed {
        return Ok(r);
    }
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    padded_range(lo, hi)
}

/// A tick label of a log10 axis: the value 10^v with two significant digits (`1e-3`,
/// `3.2e-4`).
fn log_tick_label(v: f64) -> String {
    let s = format!("{:.1e}", 10f64.powf(v));
    s.replace(".0e", "e")
}

fn draw_panel(area: &DrawingArea<BitMapBackend<'_>, Shift>, panel: &Panel, style: &PanelStyle) -> Result<(), String> {
    let logged;
    let panel = if style.log_y {
        let log = |y: f64| if y > 0.0 { y.log10() } else { f64::NAN };
        logged = Panel {
            series: panel
                .series
                .iter()
                .map(|s| Series { name: s.name.clone(), points: s.points.iter().map(|&(x, y)| (x, log(y))).collect() })
                .collect(),
            ..panel.clone()
        };
        &logged
    } else {
        panel
    };
    let finite: Vec<(f64, f64)> = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if finite.is_empty() {
        return Err(format!("the panel `{}` has no finite points", panel.title));
    }
    let (x0, x1) = axis_range(style.x_range, finite.iter().map(|p| p.0))?;
    let (y0, y1) = axis_range(style.y_range, finite.iter().map(|p| p.1))?;
    let mut all_segments: Vec<Vec<(f64, f64)>> = panel.series.iter().flat_map(|s| segments(&s.points)).collect();
    if style.diagonal {
        all_segments.push(vec![(x0, y0), (x1, y1)]);
    }
    let corner = legend_corner(&line_samples(&all_segments), (x0, x1), (y0, y1));
    let log_y = style.log_y;
    let (fx, fy) = (
        |v: &f64| tick_label(*v, x1 - x0),
        move |v: &f64| if log_y { log_tick_label(*v) } else { tick_label(*v, y1 - y0) },
    );
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 22))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(if log_y { 100 } else { y_label_area(y0, y1) })
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .axis_desc_style((FONT, 17))
        .label_style((FONT, 14))
        .x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .max_light_lines(4)
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(draw_err)?;
    if style.diagonal {
        let line = DashedPathElement::new(vec![(x0, y0), (x1, y1)], 6, 5, DIAGONAL.stroke_width(1));
        chart.draw_series(std::iter::once(line)).map_err(draw_err)?;
    }
    let mut labelled = false;
    for (i, s) in panel.series.iter().enumerate() {
        let ramp = style.ramp && panel.series.len() > MAX_LEGEND;
        let c = if ramp { ramp_color(i, panel.series.len()) } else { color(i) };
        // Past the ten colours of the palette the lines are dashed, so two series sharing
        // a colour still differ.
        let dashed = !ramp && i >= PALETTE.len();
        let named = !ramp || i == 0 || i + 1 == panel.series.len();
        let segs = segments(&s.points);
        let n_points: usize = segs.iter().map(Vec::len).sum();
        // Few points (per-epoch curves): 2-pixel lines with markers. A 2-pixel path is
        // drawn segment by segment, because plotters joins a thick polyline with miter
        // spikes at sharp turns. Many points (per-step curves): 1-pixel lines. Curves
        // without markers (ROC, precision-recall) are always 2 pixels wide.
        let few = n_points <= 60;
        let markers = few && !style.no_markers;
        let width = if few || style.no_markers { 2 } else { 1 };
        if style.points_only {
            let pts: Vec<(f64, f64)> =
                s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
            if !pts.is_empty() {
                labelled = true;
                chart
                    .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                    .map_err(draw_err)?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| Circle::new((x, y), 4, c.filled()));
            }
            continue;
        }
        for (j, seg) in segs.into_iter().enumerate() {
            let line = if dashed {
                chart.draw_series(std::iter::once(DashedPathElement::new(seg.clone(), 8, 5, c.stroke_width(width))))
            } else if width == 2 {
                chart.draw_series(seg.windows(2).map(|w| PathElement::new(vec![w[0], w[1]], c.stroke_width(width))))
            } else {
                chart.draw_series(LineSeries::new(seg.clone(), c.stroke_width(width)))
            }
            .map_err(draw_err)?;
            if j == 0 && named {
                labelled = true;
                line.label(s.name.as_str()).legend(move |(x, y)| {
                    // A dashed series shows two dashes; markers show a dot.
                    let (left, right) = if dashed { ((-10, -3), (3, 10)) } else { ((-10, 0), (0, 10)) };
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(left.0, 0), (left.1, 0)], c.stroke_width(2))
                        + PathElement::new(vec![(right.0, 0), (right.1, 0)], c.stroke_width(2))
                        + Circle::new((0, 0), 3, if markers { c.filled() } else { TRANSPARENT.filled() })
                });
            }
            if markers || seg.len() == 1 {
                chart.draw_series(seg.into_iter().map(|p| Circle::new(p, 3, c.filled()))).map_err(draw_err)?;
            }
        }
    }
    let entries = panel.series.len();
    if labelled && (entries <= MAX_LEGEND || style.ramp) {
        // Many entries: a smaller font and tighter rows, so ten or more fit beside the
        // curves.
        let (font, margin) = if entries > 6 { (13, 6) } else { (15, 10) };
        chart
            .configure_series_labels()
            .position(corner)
            .margin(margin)
            .legend_area_size(30)
            .label_font((FONT, font))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Draws `panels` side by side under `title` into a PNG at `path` (written atomically).
/// Each panel needs at least one finite point.
pub fn plot_panels(path: &Path, title: &str, panels: &[Panel]) -> Result<(), String> {
    let styled: Vec<(&Panel, PanelStyle)> = panels.iter().map(|p| (p, PanelStyle::default())).collect();
    plot_styled_panels(path, title, &styled, 520)
}

/// [`plot_panels`] with a style per panel and a given image height.
fn plot_styled_panels(path: &Path, title: &str, panels: &[(&Panel, PanelStyle)], height: u32) -> Result<(), String> {
    if panels.is_empty() {
        return Err("nothing to plot".into());
    }
    if panels.len() > 8 {
        return Err(format!("{} panels are too many for one figure (at most 8)", panels.len()));
    }
    let width = 40 + 620 * panels.len() as u32;
    render_png(path, width, height, |root| {
        let body = root.margin(8, 0, 0, 0).titled(title, (FONT, 28)).map_err(draw_err)?;
        let areas = body.split_evenly((1, panels.len()));
        for (area, (panel, style)) in areas.iter().zip(panels) {
            draw_panel(area, panel, style)?;
        }
        Ok(())
    })
}

/// [`plot_panels`] with logarithmic y axes (values <= 0 are left out): quantities that
/// span orders of magnitude, such as gradient norms. With more than 20 series a panel
/// colours them on a ramp in order (dark blue first, orange-red last) and its legend
/// names the first and the last.
pub fn plot_log_panels(path: &Path, title: &str, panels: &[Panel]) -> Result<(), String> {
    let style = PanelStyle { log_y: true, ramp: true, ..PanelStyle::default() };
    let styled: Vec<(&Panel, PanelStyle)> = panels.iter().map(|p| (p, style)).collect();
    plot_styled_panels(path, title, &styled, 520)
}

/// One series per column of `log` whose name starts with `prefix` (named without it),
/// against `epoch` (or `step`, or the row number).
pub fn prefixed_series(log: &MetricsLog, prefix: &str) -> Vec<Series> {
    let (_, xs) = x_axis(log);
    let mut out = vec![];
    for name in log.columns() {
        let Some(short) = name.strip_prefix(prefix) else { continue };
        let Some(col) = log.column(name) else { continue };
        let points: Vec<(f64, f64)> = xs.iter().zip(col).map(|(&x, y)| (x, y.unwrap_or(f64::NAN))).collect();
        out.push(Series { name: short.to_string(), points });
    }
    out
}

/// The x axis name of a log: `epoch`, `step` or `row`.
pub fn x_axis_name(log: &MetricsLog) -> String {
    x_axis(log).0
}

/// Scatter panels (markers only, no lines) side by side: a search's metric against each
/// hyperparameter, one series per kind of trial. Each panel needs a finite point.
pub fn plot_scatter_panels(path: &Path, title: &str, panels: &[Panel]) -> Result<(), String> {
    let style = PanelStyle { points_only: true, ..PanelStyle::default() };
    let styled: Vec<(&Panel, PanelStyle)> = panels.iter().map(|p| (p, style)).collect();
    plot_styled_panels(path, title, &styled, 520)
}

/// The axis range of ROC and precision-recall panels: [0, 1] with a 2% margin, so curves
/// running along an edge (a perfect classifier's) stay visible beside the frame.
const UNIT_RANGE: (f64, f64) = (-0.02, 1.02);

/// The series of one ROC curve and one precision-recall curve (as from
/// [`crate::metrics::roc_curve`] and [`crate::metrics::pr_curve`]) named with their areas
/// for [`plot_roc_pr`]: `"{name} (AUC 0.981)"` and `"{name} (AP 0.975)"`, areas to 3
/// decimals (`n/a` when not finite).
///
/// ```
/// use nnc::internals::plot::roc_pr_series;
/// let (roc, pr) = roc_pr_series("val", &[(0.0, 0.0), (1.0, 1.0)], 0.98123, &[(1.0, 0.5), (0.0, 1.0)], f64::NAN);
/// assert_eq!(roc.name, "val (AUC 0.981)");
/// assert_eq!(pr.name, "val (AP n/a)");
/// ```
pub fn roc_pr_series(name: &str, roc: &[(f64, f64)], auc: f64, pr: &[(f64, f64)], ap: f64) -> (Series, Series) {
    let area = |v: f64| if v.is_finite() { format!("{v:.3}") } else { "n/a".to_string() };
    (
        Series { name: format!("{name} (AUC {})", area(auc)), points: roc.to_vec() },
        Series { name: format!("{name} (AP {})", area(ap)), points: pr.to_vec() },
    )
}

/// The points of a curve without those inside a horizontal or vertical run (they draw
/// nothing, and ROC and precision-recall curves can have one per sample).
fn drop_collinear(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(points.len());
    for (i, &p) in points.iter().enumerate() {
        if let (Some(&prev), Some(&next)) = (out.last(), points.get(i + 1)) {
            if (prev.0 == p.0 && p.0 == next.0) || (prev.1 == p.1 && p.1 == next.1) {
                continue;
            }
        }
        out.push(p);
    }
    out
}

/// Checks that every series of a unit-square plot has a finite point and stays within
/// [0, 1]; returns the series without their redundant points.
fn unit_series(what: &str, series: &[Series]) -> Result<Vec<Series>, String> {
    let mut out = Vec::with_capacity(series.len());
    for s in series {
        if !s.points.iter().any(|(x, y)| x.is_finite() && y.is_finite()) {
            return Err(format!("the {what} `{}` has no finite points", s.name));
        }
        let outside = |v: f64| v.is_finite() && !(-1e-9..=1.0 + 1e-9).contains(&v);
        if let Some((x, y)) = s.points.iter().find(|(x, y)| outside(*x) || outside(*y)) {
            return Err(format!("the {what} `{}` has the point ({x}, {y}) outside [0, 1]", s.name));
        }
        out.push(Series { name: s.name.clone(), points: drop_collinear(&s.points) });
    }
    Ok(out)
}

/// ROC curves and precision-recall curves side by side under `title`, as a 1280 x 640
/// PNG at `path` (written atomically).
///
/// The left panel draws each of `roc` as (false positive rate, true positive rate) over
/// the dashed grey chance diagonal; the right one each of `pr` as (recall, precision).
/// Both axes of both panels are fixed to [0, 1] (with a 2% margin). Series are drawn in
/// the ten palette colours, dashed from the eleventh on; their names are the legend
/// entries, so put the areas in them (see [`roc_pr_series`]). Up to 20 series get a
/// legend, placed in the emptiest corner. When one of `roc` and `pr` is empty only the
/// other panel is drawn (660 pixels wide); both empty is an error, as is a series without
/// finite points or with a point outside [0, 1].
pub fn plot_roc_pr(path: &Path, title: &str, roc: &[Series], pr: &[Series]) -> Result<(), String> {
    if roc.is_empty() && pr.is_empty() {
        return Err("nothing to plot: no ROC or precision-recall curves".into());
    }
    let style = PanelStyle {
        x_range: Some(UNIT_RANGE),
        y_range: Some(UNIT_RANGE),
        no_markers: true,
        diagonal: false,
        points_only: false,
        log_y: false,
        ramp: false,
    };
    let mut panels: Vec<(Panel, PanelStyle)> = vec![];
    if !roc.is_empty() {
        let panel = Panel {
            title: "ROC curve".into(),
            x_label: "false positive rate".into(),
            y_label: "true positive rate".into(),
            series: unit_series("ROC curve", roc)?,
        };
        panels.push((panel, PanelStyle { diagonal: true, ..style }));
    }
    if !pr.is_empty() {
        let panel = Panel {
            title: "Precision-recall curve".into(),
            x_label: "recall".into(),
            y_label: "precision".into(),
            series: unit_series("precision-recall curve", pr)?,
        };
        panels.push((panel, style));
    }
    let styled: Vec<(&Panel, PanelStyle)> = panels.iter().map(|(p, s)| (p, *s)).collect();
    plot_styled_panels(path, title, &styled, 640)
}

/// The x axis of a log: `epoch` if present, else `step`, else the row number (from 1).
fn x_axis(log: &MetricsLog) -> (String, Vec<f64>) {
    for name in ["epoch", "step"] {
        if let Some(col) = log.column(name) {
            return (name.to_string(), col.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect());
        }
    }
    ("row".to_string(), (1..=log.len()).map(|i| i as f64).collect())
}

fn series_of(log: &MetricsLog, xs: &[f64], suffixes: &[&str]) -> Vec<Series> {
    let mut out = vec![];
    for name in log.columns() {
        if !suffixes.iter().any(|s| name == s || name.ends_with(&format!("_{s}"))) {
            continue;
        }
        let Some(col) = log.column(name) else { continue };
        let points: Vec<(f64, f64)> = xs.iter().zip(col).map(|(&x, y)| (x, y.unwrap_or(f64::NAN))).collect();
        if points.iter().any(|(x, y)| x.is_finite() && y.is_finite()) {
            out.push(Series { name: name.clone(), points });
        }
    }
    out
}

/// The panels [`plot_curves`] draws from a log: one of every `*loss` column (`loss`,
/// `train_loss`, `val_loss`, ...) against `epoch` (or `step`, or the row number), and one
/// of every `*accuracy` / `*acc` column when there is one.
pub fn curve_panels(log: &MetricsLog) -> Vec<Panel> {
    let (x_name, xs) = x_axis(log);
    let mut panels = vec![];
    let loss = series_of(log, &xs, &["loss"]);
    if !loss.is_empty() {
        panels.push(Panel { title: "Loss".into(), x_label: x_name.clone(), y_label: "loss".into(), series: loss });
    }
    let acc = series_of(log, &xs, &["accuracy", "acc"]);
    if !acc.is_empty() {
        panels.push(Panel { title: "Accuracy".into(), x_label: x_name, y_label: "accuracy".into(), series: acc });
    }
    panels
}

/// Training curves: loss per epoch (training and validation, every `*loss` column), and
/// accuracy in a second panel when the log has `*accuracy` columns, as a PNG at `path`.
/// Errors when the log has no finite loss or accuracy values.
pub fn plot_curves(path: &Path, log: &MetricsLog, title: &str) -> Result<(), String> {
    let panels = curve_panels(log);
    if panels.is_empty() {
        return Err("the metrics log has no loss or accuracy values to plot".into());
    }
    plot_panels(path, title, &panels)
}

/// The decision regions of a 2-D classifier with the data on top, as a PNG at `path`.
///
/// `predict` is called once with the centres of a `GRID x GRID` grid over the data's
/// bounding box plus a 10% margin (row-major: x varies fastest, y increases from the
/// bottom row) and must return one class in `0..classes` per point; split the batch
/// inside `predict` if the model needs smaller ones. Regions are shaded in light class
/// colours; the points are drawn in their true class's colour with a dark outline.
#[allow(clippy::type_complexity)] // the closure type is the interface
pub fn plot_decision_boundary(
    path: &Path,
    points: &[[f32; 2]],
    labels: &[i32],
    classes: usize,
    predict: &mut dyn FnMut(&[[f32; 2]]) -> Result<Vec<i32>, String>,
    title: &str,
) -> Result<(), String> {
    if points.is_empty() {
        return Err("no points to plot".into());
    }
    if points.len() != labels.len() {
        return Err(format!("{} points but {} labels", points.len(), labels.len()));
    }
    if classes == 0 || classes > 1 << 20 {
        return Err(format!("{classes} classes cannot be plotted"));
    }
    for (i, (p, &l)) in points.iter().zip(labels).enumerate() {
        if !p[0].is_finite() || !p[1].is_finite() {
            return Err(format!("point {i} is not finite"));
        }
        if l < 0 || l as usize >= classes {
            return Err(format!("label {i} is {l}, outside 0..{classes}"));
        }
    }
    let bounds = |d: usize| {
        points
            .iter()
            .map(|p| p[d] as f64)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    let margin = |(lo, hi): (f64, f64)| -> Result<(f64, f64), String> {
        let span = hi - lo;
        let pad = if span > 0.0 { span * 0.1 } else { lo.abs().max(1.0) * 0.5 };
        let (lo, hi) = (lo - pad, hi + pad);
        // Grid centres are passed to `predict` as f32, so the range must stay within it.
        if !(hi - lo).is_finite() || lo.abs().max(hi.abs()) > 1e30 {
            return Err("the points are too far apart to plot".into());
        }
        Ok((lo, hi))
    };
    let (x0, x1) = margin(bounds(0))?;
    let (y0, y1) = margin(bounds(1))?;
    let (dx, dy) = ((x1 - x0) / GRID as f64, (y1 - y0) / GRID as f64);
    let mut grid = Vec::with_capacity(GRID * GRID);
    for j in 0..GRID {
        for i in 0..GRID {
            grid.push([(x0 + (i as f64 + 0.5) * dx) as f32, (y0 + (j as f64 + 0.5) * dy) as f32]);
        }
    }
    let predicted = predict(&grid)?;
    if predicted.len() != grid.len() {
        return Err(format!("the classifier returned {} predictions for {} grid points", predicted.len(), grid.len()));
    }
    if let Some((i, &c)) = predicted.iter().enumerate().find(|(_, &c)| c < 0 || c as usize >= classes) {
        return Err(format!("the classifier predicted class {c} at grid point {i}, outside 0..{classes}"));
    }

    let data: Vec<(f64, f64)> = points.iter().map(|p| (p[0] as f64, p[1] as f64)).collect();
    let corner = legend_corner(&data, (x0, x1), (y0, y1));
    let (fx, fy) = (|v: &f64| tick_label(*v, x1 - x0), |v: &f64| tick_label(*v, y1 - y0));
    render_png(path, 760, 760, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 26))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(y_label_area(y0, y1))
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_err)?;
        let cells = predicted.iter().enumerate().map(|(idx, &c)| {
            let (i, j) = ((idx % GRID) as f64, (idx / GRID) as f64);
            let fill = lighten(color(c as usize), 0.7);
            Rectangle::new([(x0 + i * dx, y0 + j * dy), (x0 + (i + 1.0) * dx, y0 + (j + 1.0) * dy)], fill.filled())
        });
        chart.draw_series(cells).map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("x[0]")
            .y_desc("x[1]")
            .axis_desc_style((FONT, 17))
            .label_style((FONT, 14))
            .x_label_formatter(&fx)
            .y_label_formatter(&fy)
            .draw()
            .map_err(draw_err)?;
        let radius = if points.len() > 2000 { 2 } else { 4 };
        for c in 0..classes {
            let col = color(c);
            let mine = points.iter().zip(labels).filter(|(_, &l)| l as usize == c);
            let anno = chart
                .draw_series(mine.map(|(p, _)| {
                    EmptyElement::at((p[0] as f64, p[1] as f64))
                        + Circle::new((0, 0), radius, col.filled())
                        + Circle::new((0, 0), radius, RGBColor(40, 40, 40).stroke_width(1))
                }))
                .map_err(draw_err)?;
            if classes <= 12 {
                anno.label(format!("class {c}")).legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + Circle::new((0, 0), 5, col.filled())
                        + Circle::new((0, 0), 5, RGBColor(40, 40, 40).stroke_width(1))
                });
            }
        }
        if classes <= 12 {
            chart
                .configure_series_labels()
                .position(corner)
                .margin(10)
                .legend_area_size(20)
                .label_font((FONT, 15))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(160, 160, 160))
                .draw()
                .map_err(draw_err)?;
        }
        Ok(())
    })
}
