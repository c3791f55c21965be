//! `report.html`: one self-contained page for a person to look at a run
//! (no script, no network): the verdict and the expectations; per second
//! of the main phase, operations by outcome, latency quantiles and
//! availability, with every fault window drawn as a labelled band; which
//! server served each partition when, failovers marked (table runs); CPU
//! and disk utilisation per role and per node; each checker's verdict with its smallest
//! failing witness; the faults with their effects; the phases.
//!
//! The charts are inline SVG written here: lines, rectangles and text need
//! no plotting crate, and the page stays byte-for-byte the same for one
//! seed. The markup is well-formed XML (every element closed, every text
//! escaped), so any XML parser can check it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::history::{Operation, Outcome, Phase};
use crate::report::phases::FaultWindow;
use crate::report::Report;
use crate::run::RunOutput;
use crate::scenario::Scenario;

/// Width and height of a chart, in SVG user units.
const CHART_W: f64 = 960.0;
const CHART_H: f64 = 220.0;
/// Margins of a chart's plot area: left, right, top, bottom.
const MARGIN: (f64, f64, f64, f64) = (64.0, 16.0, 36.0, 30.0);
/// Height of one partition's row in the ownership timeline.
const ROW_H: f64 = 14.0;
/// The most partitions the ownership timeline draws (the rest are counted).
pub const TIMELINE_PARTITIONS_MAX: usize = 256;
/// The most seconds a per-second chart draws (longer runs are cut, said so).
pub const CHART_SECONDS_MAX: usize = 3_600;
/// The most nodes a utilisation heat map draws (the rest are counted).
pub const HEATMAP_NODES_MAX: usize = 256;
/// Characters of a fault's label inside its band.
const BAND_LABEL_CHARS: usize = 40;

const PALETTE: [&str; 10] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/// Text made safe for XML: element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline are not XML.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

struct Series {
    name: String,
    color: &'static str,
    /// (second, value); a gap where the value is `None`.
    points: Vec<Option<f64>>,
}

enum Scale {
    Linear { max: f64 },
    /// Log10 between `min` and `max` (values below `min` are drawn at it).
    Log { min: f64, max: f64 },
}

struct Chart<'a> {
    title: String,
    unit: &'a str,
    seconds: usize,
    scale: Scale,
    series: Vec<Series>,
    bands: &'a [Band],
}

/// A fault window in seconds from the main phase's start.
struct Band {
    from: f64,
    to: f64,
    label: String,
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A round step that divides `max` into about `n` parts.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }
}

impl Chart<'_> {
    fn y(&self, v: f64, top: f64, h: f64) -> f64 {
        let frac = match self.scale {
            Scale::Linear { max } => (v / max.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0),
            Scale::Log { min, max } => ((v.max(min).log10() - min.log10()) / (max.log10() - min.log10()).max(f64::MIN_POSITIVE)).clamp(0.0, 1.0),
        };
        top + h * (1.0 - frac)
    }

    fn svg(&self) -> String {
        let (ml, mr, mt, mb) = MARGIN;
        let (w, h) = (CHART_W - ml - mr, CHART_H - mt - mb);
        let secs = self.seconds.max(1) as f64;
        let x = |s: f64| ml + w * (s / secs).clamp(0.0, 1.0);
        let mut o = String::new();
        let _ = write!(o, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{CHART_H}" viewBox="0 0 {CHART_W} {CHART_H}" role="img"><title>{}</title>"#, esc(&self.title));
        let _ = write!(o, r##"<rect x="{ml}" y="{mt}" width="{w}" height="{h}" fill="#fcfcfc" stroke="#bbb"/>"##);
        for (i, b) in self.bands.iter().enumerate() {
            let (x0, x1) = (x(b.from), x(b.to));
            let label: String = b.label.chars().take(BAND_LABEL_CHARS).collect();
            let _ = write!(
                o,
                r##"<rect class="band" x="{x0:.1}" y="{mt}" width="{:.1}" height="{h}" fill="#d62728" fill-opacity="0.10"><title>{}</title></rect><text x="{:.1}" y="{:.1}" font-size="9" fill="#a01818">{}</text>"##,
                (x1 - x0).max(1.0),
                esc(&b.label),
                x0 + 2.0,
                mt + 10.0 + 10.0 * (i % 3) as f64,
                esc(&label)
            );
        }
        // The y axis: ticks and grid lines.
        let ticks: Vec<f64> = match self.scale {
            Scale::Linear { max } => {
                let step = nice_step(max, 4.0);
                (0..=((max / step).floor() as u64).min(20)).map(|i| i as f64 * step).collect()
            }
            Scale::Log { min, max } => {
                let (a, b) = (min.log10().ceil() as i32, max.log10().floor() as i32);
                (a..=b).map(|e| 10f64.powi(e)).collect()
            }
        };
        for t in ticks {
            let ty = self.y(t, mt, h);
            let _ = write!(o, r##"<line x1="{ml}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#444">{}</text>"##, ml + w, ml - 4.0, ty + 3.0, esc(&fmt_num(t)));
        }
        // The x axis: seconds.
        let step = nice_step(secs, 10.0).max(1.0);
        let mut s = 0.0;
        while s <= secs {
            let tx = x(s);
            let _ = write!(o, r##"<line x1="{tx:.1}" y1="{:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#888"/><text x="{tx:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#444">{}s</text>"##, mt + h, mt + h + 4.0, mt + h + 16.0, fmt_num(s));
            s += step;
        }
        let _ = write!(o, r##"<text x="{ml}" y="13" font-size="12" font-weight="bold" fill="#222">{}</text><text x="{:.1}" y="13" font-size="10" text-anchor="end" fill="#666">{}</text>"##, esc(&self.title), ml + w, esc(self.unit));
        // The legend, under the title, one entry per series.
        let mut lx = ml;
        for sr in &self.series {
            let _ = write!(o, r##"<rect x="{lx:.1}" y="21" width="10" height="3" fill="{}"/><text x="{:.1}" y="26" font-size="10" fill="#333">{}</text>"##, sr.color, lx + 14.0, esc(&sr.name));
            lx += 24.0 + 6.0 * sr.name.chars().count() as f64;
        }
        // The series, each as polylines over its runs of values, at the middle of each second.
        for sr in &self.series {
            let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for (i, v) in sr.points.iter().enumerate() {
                match v {
                    Some(v) => runs.last_mut().expect("a run").push((x(i as f64 + 0.5), self.y(*v, mt, h))),
                    None => runs.push(Vec::new()),
                }
            }
            for r in runs.iter().filter(|r| !r.is_empty()) {
                let pts: Vec<String> = r.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
                if r.len() == 1 {
                    let _ = write!(o, r#"<circle cx="{:.1}" cy="{:.1}" r="2" fill="{}"/>"#, r[0].0, r[0].1, sr.color);
                } else {
                    let _ = write!(o, r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#, sr.color, pts.join(" "));
                }
            }
        }
        o.push_str("</svg>");
        o
    }
}

/// The quantile `q` of sorted `v` (nearest rank).
fn quantile(v: &[u64], q: f64) -> u64 {
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn second_of(ns: u64, start: u64, secs: usize) -> Option<usize> {
    let s = (ns.checked_sub(start)? / 1_000_000_000) as usize;
    (s < secs).then_some(s)
}

/// The seconds under a timeline of `w` from `x0`, at height `y`.
fn seconds_labels(o: &mut String, x0: f64, w: f64, y: f64, secs: f64) {
    let step = nice_step(secs, 10.0).max(1.0);
    let mut s = 0.0;
    while s <= secs {
        let _ = write!(o, r##"<text x="{:.1}" y="{y:.1}" font-size="10" text-anchor="middle" fill="#444">{}s</text>"##, x0 + w * (s / secs), fmt_num(s));
        s += step;
    }
}

/// The partition-ownership timeline: a row per partition, a bar per
/// serving interval coloured by server, a tick where a failover's new
/// owner began.
fn ownership_svg(data: &engine::table::TableObserverData, topology: &sim::topology::Topology, start: u64, secs: usize, bands: &[Band]) -> String {
    let mut parts: BTreeMap<u64, Vec<&engine::table::ServingInterval>> = BTreeMap::new();
    for iv in &data.serving {
        parts.entry(iv.partition).or_default().push(iv);
    }
    let total = parts.len();
    let shown: Vec<(u64, Vec<&engine::table::ServingInterval>)> = parts.into_iter().take(TIMELINE_PARTITIONS_MAX).collect();
    let servers: Vec<sim::topology::NodeId> = {
        let mut s: Vec<_> = data.serving.iter().map(|iv| iv.server).collect();
        s.sort();
        s.dedup();
        s
    };
    let color = |n: sim::topology::NodeId| PALETTE[servers.iter().position(|&s| s == n).unwrap_or(0) % PALETTE.len()];
    let (ml, mr, mt, mb) = (MARGIN.0, MARGIN.1, 40.0, 30.0);
    let w = CHART_W - ml - mr;
    let h = ROW_H * shown.len().max(1) as f64;
    let height = mt + h + mb;
    let secs_f = secs.max(1) as f64;
    let x = |ns: u64| ml + w * ((ns.saturating_sub(start) as f64 / 1e9) / secs_f).clamp(0.0, 1.0);
    let mut o = String::new();
    let _ = write!(o, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{height}" viewBox="0 0 {CHART_W} {height}" role="img"><title>Partition ownership</title>"#);
    let _ = write!(o, r##"<text x="{ml}" y="14" font-size="12" font-weight="bold" fill="#222">Which server served each partition (a bar per lease-holding interval; a black tick where a new owner took over)</text>"##);
    for (row, (pid, ivs)) in shown.iter().enumerate() {
        let y = mt + ROW_H * row as f64;
        let _ = write!(o, r##"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="end" fill="#444">p{pid}</text>"##, ml - 4.0, y + ROW_H - 4.0);
        let mut by_epoch: Vec<&&engine::table::ServingInterval> = ivs.iter().collect();
        by_epoch.sort_by_key(|iv| (iv.epoch, iv.start));
        for (k, iv) in by_epoch.iter().enumerate() {
            let end = iv.stopped.unwrap_or(iv.last_served.max(iv.renewed)).0;
            let (x0, x1) = (x(iv.start.0), x(end));
            let name = &topology.node(iv.server).name;
            let _ = write!(
                o,
                r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>partition {pid}: {} epoch {} from {} to {}</title></rect>"#,
                y + 1.0,
                (x1 - x0).max(1.0),
                ROW_H - 2.0,
                color(iv.server),
                esc(name),
                iv.epoch,
                iv.start,
                iv.stopped.map_or_else(|| format!("{} (never noticed it stopped)", iv.last_served.max(iv.renewed)), |t| t.to_string())
            );
            if k > 0 {
                let _ = write!(o, r##"<line class="failover" x1="{x0:.1}" y1="{y:.1}" x2="{x0:.1}" y2="{:.1}" stroke="#000" stroke-width="2"/>"##, y + ROW_H);
            }
        }
    }
    // The fault windows over the bars, outlined.
    for b in bands {
        let (x0, x1) = (ml + w * (b.from / secs_f).clamp(0.0, 1.0), ml + w * (b.to / secs_f).clamp(0.0, 1.0));
        let _ = write!(o, r##"<rect class="band" x="{x0:.1}" y="{mt}" width="{:.1}" height="{h}" fill="#d62728" fill-opacity="0.12" stroke="#d62728" stroke-dasharray="3,2"><title>{}</title></rect>"##, (x1 - x0).max(1.0), esc(&b.label));
    }
    // The legend: one swatch per server.
    for (i, s) in servers.iter().enumerate() {
        let (lx, ly) = (ml + 130.0 * (i % 7) as f64, 22.0 + 10.0 * (i / 7) as f64);
        let _ = write!(o, r##"<rect x="{lx:.1}" y="{:.1}" width="10" height="8" fill="{}"/><text x="{:.1}" y="{ly:.1}" font-size="9" fill="#333">{}</text>"##, ly - 7.0, color(*s), lx + 13.0, esc(&topology.node(*s).name));
    }
    seconds_labels(&mut o, ml, w, mt + h + 16.0, secs_f);
    if total > shown.len() {
        let _ = write!(o, r##"<text x="{ml}" y="{:.1}" font-size="10" fill="#a01818">{} more partitions not drawn</text>"##, mt + h + 28.0, total - shown.len());
    }
    o.push_str("</svg>");
    o
}

/// A heat map of one utilisation per node and second: a row per node
/// (grouped by role), a cell per second, darker the busier (hover for the
/// figure).
fn heatmap_svg(title: &str, usage: &[crate::run::output::RoleUsage], pick: fn(&crate::run::output::NodeUsage) -> &[f64], secs: usize, bands: &[Band]) -> String {
    let nodes: Vec<&crate::run::output::NodeUsage> = usage.iter().flat_map(|u| u.per_node.iter()).take(HEATMAP_NODES_MAX).collect();
    let total: usize = usage.iter().map(|u| u.per_node.len()).sum();
    let (ml, mr, mt, mb) = (110.0, MARGIN.1, 24.0, 30.0);
    let w = CHART_W - ml - mr;
    let h = ROW_H * nodes.len().max(1) as f64;
    let height = mt + h + mb;
    let secs_f = secs.max(1) as f64;
    let cell = w / secs_f;
    let mut o = String::new();
    let _ = write!(o, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{height}" viewBox="0 0 {CHART_W} {height}" role="img"><title>{}</title>"#, esc(title));
    let _ = write!(o, r##"<text x="{ml}" y="14" font-size="12" font-weight="bold" fill="#222">{}</text>"##, esc(title));
    for (row, n) in nodes.iter().enumerate() {
        let y = mt + ROW_H * row as f64;
        let _ = write!(o, r##"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="end" fill="#444">{}</text>"##, ml - 4.0, y + ROW_H - 4.0, esc(&n.name));
        for (s, v) in pick(n).iter().take(secs).enumerate() {
            if *v <= 0.0 {
                continue;
            }
            let _ = write!(
                o,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#1f77b4" fill-opacity="{:.3}"><title>{} at {s}s: {:.0}%</title></rect>"##,
                ml + cell * s as f64,
                y + 1.0,
                cell.max(0.5),
                ROW_H - 2.0,
                0.08 + 0.92 * v.clamp(0.0, 1.0),
                esc(&n.name),
                100.0 * v
            );
        }
    }
    for b in bands {
        let (x0, x1) = (ml + w * (b.from / secs_f).clamp(0.0, 1.0), ml + w * (b.to / secs_f).clamp(0.0, 1.0));
        let _ = write!(o, r##"<rect class="band" x="{x0:.1}" y="{mt}" width="{:.1}" height="{h}" fill="none" stroke="#d62728" stroke-dasharray="3,2"><title>{}</title></rect>"##, (x1 - x0).max(1.0), esc(&b.label));
    }
    seconds_labels(&mut o, ml, w, mt + h + 16.0, secs_f);
    if total > nodes.len() {
        let _ = write!(o, r##"<text x="{ml}" y="{:.1}" font-size="10" fill="#a01818">{} more nodes not drawn</text>"##, mt + h + 28.0, total - nodes.len());
    }
    o.push_str("</svg>");
    o
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}h1{font-size:20px}h2{font-size:16px;margin-top:28px}table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}pre{font-size:11px;background:#f6f6f6;padding:8px;overflow-x:auto;white-space:pre-wrap}.pass{color:#1a7f37;font-weight:bold}.fail{color:#cf222e;font-weight:bold}.muted{color:#666}svg{display:block;margin:8px 0}";

/// The page for one run: `ops` are `out.history.operations()`, `windows`
/// the fault windows, `replay` the command that replays the run.
pub fn render(scn: &Scenario, out: &RunOutput, report: &Report, ops: &[Operation<'_>], windows: &[FaultWindow], replay: &str) -> String {
    let start = out.main_start.0;
    let secs = (((out.main_end.0.saturating_sub(start)) as f64 / 1e9).ceil() as usize).clamp(1, CHART_SECONDS_MAX);
    let bands: Vec<Band> = windows
        .iter()
        .map(|w| Band { from: w.from.0.saturating_sub(start) as f64 / 1e9, to: w.to.unwrap_or(out.main_end).0.saturating_sub(start) as f64 / 1e9, label: w.text.clone() })
        .collect();
    // Per second of the main phase, by invocation: outcomes, ok latencies.
    let mut outcome = vec![[0u64; 3]; secs];
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); secs];
    for r in ops.iter().filter(|r| r.phase == Phase::Main) {
        let Some(s) = second_of(r.invoke_ns, start, secs) else { continue };
        let k = match r.outcome {
            Outcome::Ok => 0,
            Outcome::Fail => 1,
            Outcome::Info | Outcome::Open => 2,
        };
        outcome[s][k] += 1;
        if let (Outcome::Ok, Some(c)) = (r.outcome, r.complete_ns) {
            lat[s].push(c - r.invoke_ns);
        }
    }
    for l in &mut lat {
        l.sort_unstable();
    }
    let ops_max = outcome.iter().flat_map(|o| o.iter()).copied().max().unwrap_or(0).max(1) as f64;
    let ops_chart = Chart {
        title: "Operations per second, by outcome (by invocation)".into(),
        unit: "operations",
        seconds: secs,
        scale: Scale::Linear { max: ops_max * 1.05 },
        series: ["ok", "failed", "unknown (info)"]
            .iter()
            .enumerate()
            .map(|(k, n)| Series { name: n.to_string(), color: ["#2ca02c", "#d62728", "#ff7f0e"][k], points: outcome.iter().map(|o| Some(o[k] as f64)).collect() })
            .collect(),
        bands: &bands,
    };
    let ms = |v: u64| v as f64 / 1e6;
    let lat_max = lat.iter().filter_map(|l| l.last()).copied().max().unwrap_or(1_000_000);
    let lat_chart = Chart {
        title: "Latency of successful operations (by invocation second)".into(),
        unit: "milliseconds, log scale",
        seconds: secs,
        scale: Scale::Log { min: 0.1, max: (ms(lat_max) * 1.5).max(1.0) },
        series: [("p50", 0.5, "#1f77b4"), ("p99", 0.99, "#9467bd"), ("max", 1.0, "#7f7f7f")]
            .into_iter()
            .map(|(n, q, c)| Series { name: n.into(), color: c, points: lat.iter().map(|l| (!l.is_empty()).then(|| ms(quantile(l, q)))).collect() })
            .collect(),
        bands: &bands,
    };
    let avail_chart = Chart {
        title: "Availability per second (answered / invoked)".into(),
        unit: "fraction",
        seconds: secs,
        scale: Scale::Linear { max: 1.0 },
        series: vec![Series { name: "availability".into(), color: "#1f77b4", points: report.availability.per_second.iter().take(secs).map(|v| Some(*v)).collect() }],
        bands: &bands,
    };
    // Usage series count seconds from the main phase's start, as the charts do.
    let usage_secs = |v: &[f64]| -> Vec<Option<f64>> { v.iter().take(secs).map(|x| Some(*x)).collect() };
    let role_chart = |title: &str, unit: &'static str, pick: fn(&crate::run::output::RoleUsage) -> &[f64]| Chart {
        title: title.into(),
        unit,
        seconds: secs,
        scale: Scale::Linear { max: 1.0 },
        series: out.usage.iter().enumerate().map(|(i, u)| Series { name: u.role.clone(), color: PALETTE[i % PALETTE.len()], points: usage_secs(pick(u)) }).collect(),
        bands: &bands,
    };
    let cpu_chart = role_chart("CPU utilisation per role (the busiest node of the role)", "fraction of its cores", |u| &u.cpu_max);
    let disk_chart = role_chart("Disk utilisation per role (the busiest node's device)", "fraction of the second", |u| &u.disk_max);

    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>");
    let _ = write!(h, "<title>{} seed {}</title><style>{STYLE}</style></head><body>", esc(&report.scenario), report.seed);
    let verdict = if report.pass { r#"<span class="pass">PASS</span>"# } else { r#"<span class="fail">FAIL</span>"# };
    let _ = write!(h, "<h1>{} — seed {} — {verdict}</h1>", esc(&report.scenario), report.seed);
    let _ = write!(h, "<p>{}</p>", esc(&scn.description));
    let _ = write!(
        h,
        "<p class=\"muted\">digest {} · {} events · {} simulated · main phase from {} · replay: <code>{}</code></p>",
        esc(&report.digest),
        report.events,
        esc(&report.simulated),
        esc(&report.main_start),
        esc(replay)
    );
    h.push_str("<h2>Expectations</h2><table><tr><th>expectation</th><th>expected</th><th>measured</th><th>verdict</th></tr>");
    for e in &report.expectations {
        let v = if e.pass { r#"<span class="pass">pass</span>"# } else { r#"<span class="fail">FAIL</span>"# };
        let _ = write!(h, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{v}</td></tr>", esc(&e.name), esc(&e.expected), esc(&e.measured));
    }
    h.push_str("</table>");
    h.push_str("<h2>Load and availability</h2><p class=\"muted\">Shaded bands are the fault windows (hover for the whole fault). Seconds count from the main phase's start.</p>");
    for c in [&ops_chart, &lat_chart, &avail_chart] {
        h.push_str(&c.svg());
    }
    h.push_str("<h2>Partition ownership</h2>");
    match out.observers.get::<engine::table::TableObserver>() {
        Some(t) => h.push_str(&ownership_svg(&t.snapshot(), &scn.topology, start, secs, &bands)),
        None => {
            let _ = write!(h, "<p class=\"muted\">The {} service has no partitions to move.</p>", esc(scn.service.kind()));
        }
    }
    h.push_str("<h2>Resources</h2>");
    if out.usage.is_empty() {
        h.push_str("<p class=\"muted\">This service charges no CPU or disk time to a capacity model.</p>");
    } else {
        h.push_str(&cpu_chart.svg());
        h.push_str(&heatmap_svg("CPU utilisation per node (fraction of its cores)", &out.usage, |n| &n.cpu, secs, &bands));
        h.push_str(&disk_chart.svg());
        h.push_str(&heatmap_svg("Disk utilisation per node (fraction of the second its device was busy)", &out.usage, |n| &n.disk, secs, &bands));
    }
    h.push_str("<h2>Checkers</h2>");
    if let Some(v) = &report.checks {
        h.push_str("<table><tr><th>checker</th><th>verdict</th><th>counts</th></tr>");
        for (checker, r) in v.reports() {
            if r.is_skipped() {
                continue;
            }
            let verdict = format!("{:?}", r.verdict).to_lowercase();
            let class = if verdict == "fail" { "fail" } else if verdict == "pass" { "pass" } else { "muted" };
            let counts: Vec<String> = r.counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
            let _ = write!(h, "<tr><td>{}</td><td><span class=\"{class}\">{}</span></td><td>{}</td></tr>", esc(checker.name()), esc(&verdict), esc(&counts.join(" ")));
            if let Some(c) = &r.counterexample {
                let _ = write!(h, "<tr><td colspan=\"3\"><pre>{}</pre></td></tr>", esc(c));
            }
            if let Some(n) = &r.note {
                let _ = write!(h, "<tr><td colspan=\"3\" class=\"muted\">{}</td></tr>", esc(n));
            }
        }
        h.push_str("</table>");
    } else {
        h.push_str("<p class=\"muted\">Not checked.</p>");
    }
    h.push_str("<h2>Faults</h2><table><tr><th>at</th><th>fault</th><th>effect</th></tr>");
    for f in &report.faults {
        let effect = match (&f.refused, &f.effect) {
            (Some(r), _) => format!("refused: {r}"),
            (None, Some(e)) => e.clone(),
            (None, None) => String::new(),
        };
        let class = if f.inert { " class=\"fail\"" } else { "" };
        let _ = write!(h, "<tr><td>{}</td><td>{}</td><td{class}>{}</td></tr>", esc(&f.at), esc(&f.fault), esc(&effect));
    }
    h.push_str("</table><h2>Phases</h2><table><tr><th>phase</th><th>from</th><th>to</th><th>ok/s</th><th>availability</th></tr>");
    for p in &report.phases {
        let _ = write!(h, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.4}</td></tr>", esc(&p.phase), esc(&p.from), esc(&p.to), p.ok_per_s, p.availability);
    }
    h.push_str("</table></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_control_characters_dropped() {
        assert_eq!(esc(r#"a<b & "c" 'd'>"#), "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;");
        assert_eq!(esc("x\u{1}y\nz"), "x\u{fffd}y\nz");
    }

    #[test]
    fn steps_are_round_and_quantiles_are_nearest_rank() {
        assert_eq!(nice_step(100.0, 4.0), 50.0);
        assert_eq!(nice_step(7.0, 10.0), 1.0);
        assert_eq!(nice_step(0.9, 4.0), 0.5);
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!((quantile(&v, 0.5), quantile(&v, 0.99), quantile(&v, 1.0)), (5, 10, 10));
    }
}
