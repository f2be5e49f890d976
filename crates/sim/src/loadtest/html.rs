//! The HTML report: one self-contained file (inline SVG and CSS, no script, nothing fetched) with the summary,
//! the SLO verdict, latency and throughput over time with the chaos events marked, and the per-class figures.

use super::report::{ChaosEvent, Figures, LoadReport};
use std::fmt::Write as _;

const W: f64 = 760.0;
const H: f64 = 240.0;
/// Plot margins: left, right, top, bottom.
const L: f64 = 56.0;
const R: f64 = 16.0;
const T: f64 = 16.0;
const B: f64 = 34.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A round step near `span / 5`.
fn step(span: f64) -> f64 {
    let raw = (span / 5.0).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag)
}

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

fn line_chart(y_label: &str, series: &[Series], x_max: f64, chaos: &[ChaosEvent]) -> String {
    let y_max = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max).max(1e-9) * 1.1;
    let x_max = x_max.max(1e-9);
    let (pw, ph) = (W - L - R, H - T - B);
    let x = |v: f64| L + v / x_max * pw;
    let y = |v: f64| T + ph - v / y_max * ph;
    let mut s = format!(r#"<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img">"#);
    let ys = step(y_max);
    let mut v = 0.0;
    while v <= y_max {
        let _ = write!(
            s,
            r##"<line x1="{L}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e3e3e3"/><text x="{}" y="{:.1}" text-anchor="end" class="t">{}</text>"##,
            W - R,
            L - 6.0,
            y(v) + 4.0,
            fmt_num(v),
            yy = y(v)
        );
        v += ys;
    }
    let xs = step(x_max);
    let mut v = 0.0;
    while v <= x_max + 1e-9 {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" class="t">{}s</text>"#,
            x(v),
            H - B + 16.0,
            fmt_num(v)
        );
        v += xs;
    }
    let _ = write!(
        s,
        r##"<text x="12" y="{}" class="t" transform="rotate(-90 12 {})" text-anchor="middle">{}</text><rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##,
        T + ph / 2.0,
        T + ph / 2.0,
        esc(y_label)
    );
    for c in chaos {
        let cx = x(c.t_s.min(x_max));
        let _ = write!(
            s,
            r##"<line x1="{cx:.1}" x2="{cx:.1}" y1="{T}" y2="{}" stroke="#c0392b" stroke-dasharray="4 3"><title>{:.1}s: {}</title></line>"##,
            T + ph,
            c.t_s,
            esc(&c.what)
        );
    }
    for (i, se) in series.iter().enumerate() {
        let pts: Vec<String> = se.points.iter().map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1))).collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/><rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" class="t">{}</text>"#,
            se.color,
            pts.join(" "),
            L + 10.0 + i as f64 * 120.0,
            T + 4.0,
            se.color,
            L + 24.0 + i as f64 * 120.0,
            T + 13.0,
            esc(se.name)
        );
    }
    s.push_str("</svg>");
    s
}

fn fmt_num(v: f64) -> String {
    if v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Horizontal bars per class: p50 and p99 latency, and the shed rate.
fn class_chart(classes: &[(&String, &Figures)]) -> String {
    let row = 44.0;
    let h = T + row * classes.len() as f64 + 10.0;
    let max = classes.iter().map(|(_, f)| f.latency_ms.p99).fold(0.0, f64::max).max(1e-9);
    let (x0, pw) = (150.0, 420.0);
    let mut s = format!(r#"<svg viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img">"#);
    for (i, (name, f)) in classes.iter().enumerate() {
        let y0 = T + i as f64 * row;
        let bar = |v: f64| v / max * pw;
        let _ = write!(
            s,
            r##"<text x="{}" y="{:.1}" text-anchor="end" class="t">{}</text><rect x="{x0}" y="{y0:.1}" width="{:.1}" height="14" fill="#2e86c1"/><text x="{:.1}" y="{:.1}" class="t">p50 {:.2} ms</text><rect x="{x0}" y="{:.1}" width="{:.1}" height="14" fill="#e67e22"/><text x="{:.1}" y="{:.1}" class="t">p99 {:.2} ms · shed {:.1}% · errors {:.1}%</text>"##,
            x0 - 8.0,
            y0 + 20.0,
            esc(name),
            bar(f.latency_ms.p50),
            x0 + bar(f.latency_ms.p50) + 6.0,
            y0 + 11.0,
            f.latency_ms.p50,
            y0 + 17.0,
            bar(f.latency_ms.p99),
            x0 + bar(f.latency_ms.p99) + 6.0,
            y0 + 28.0,
            f.latency_ms.p99,
            f.shed_rate * 100.0,
            f.error_rate * 100.0
        );
    }
    s.push_str("</svg>");
    s
}

fn figures_row(name: &str, f: &Figures) -> String {
    let l = &f.latency_ms;
    format!(
        "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{} ({:.2}%)</td><td>{} ({:.2}%)</td></tr>",
        esc(name),
        f.calls,
        f.throughput,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max,
        f.errors,
        f.error_rate * 100.0,
        f.shed,
        f.shed_rate * 100.0
    )
}

pub fn render(r: &LoadReport) -> String {
    let mut h = String::new();
    let verdict = if r.slo.pass { r#"<b class="pass">PASS</b>"# } else { r#"<b class="fail">FAIL</b>"# };
    let _ = write!(
        h,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>loadtest: {name}</title><style>
body{{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:820px}} table{{border-collapse:collapse;margin:8px 0 20px}}
td,th{{border:1px solid #ddd;padding:3px 8px;text-align:right}} td:first-child,th:first-child{{text-align:left}}
.t{{font-size:11px;fill:#444}} .pass{{color:#1e8449}} .fail{{color:#c0392b}} h2{{margin-top:28px}}
</style></head><body><h1>loadtest: {name}</h1>
<p>{calls} calls in {win:.1}s ({tp:.1}/s), {late} sent late (timed from when they were due). SLO: {verdict}</p>"#,
        name = esc(&r.scenario),
        calls = r.all.calls,
        win = r.window_s,
        tp = r.all.throughput,
        late = r.late,
    );
    h.push_str("<table><tr><th>scope</th><th>calls</th><th>calls/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>errors</th><th>shed</th></tr>");
    h.push_str(&figures_row("all", &r.all));
    for (n, f) in &r.classes {
        h.push_str(&figures_row(&format!("class {n}"), f));
    }
    h.push_str("</table>");
    if !r.slo.checks.is_empty() {
        h.push_str("<h2>SLOs</h2><table><tr><th>scope</th><th>limit</th><th>actual</th><th>verdict</th></tr>");
        for c in &r.slo.checks {
            let actual = c.actual.map_or("no calls".into(), |a| format!("{a:.4}"));
            let v = if c.pass { r#"<span class="pass">pass</span>"# } else { r#"<span class="fail">FAIL</span>"# };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{} = {}</td><td>{actual}</td><td>{v}</td></tr>",
                esc(&c.scope),
                esc(&c.key),
                c.limit
            );
        }
        h.push_str("</table>");
    }
    let x_max = r.timeline.len() as f64 * r.bucket_s;
    let pts = |f: &dyn Fn(&super::report::Point) -> f64| -> Vec<(f64, f64)> {
        r.timeline.iter().map(|p| (p.t_s + r.bucket_s / 2.0, f(p))).collect()
    };
    h.push_str("<h2>Latency over time</h2>");
    h.push_str(&line_chart(
        "ms",
        &[
            Series { name: "p50", color: "#2e86c1", points: pts(&|p| p.p50_ms) },
            Series { name: "p99", color: "#e67e22", points: pts(&|p| p.p99_ms) },
        ],
        x_max,
        &r.chaos,
    ));
    h.push_str("<h2>Calls over time</h2>");
    let per_s = |n: u64| n as f64 / r.bucket_s;
    h.push_str(&line_chart(
        "calls/s",
        &[
            Series { name: "calls", color: "#27ae60", points: pts(&|p| per_s(p.calls)) },
            Series { name: "errors", color: "#c0392b", points: pts(&|p| per_s(p.errors)) },
            Series { name: "shed", color: "#8e44ad", points: pts(&|p| per_s(p.shed)) },
        ],
        x_max,
        &r.chaos,
    ));
    if !r.classes.is_empty() {
        h.push_str("<h2>Per class</h2>");
        h.push_str(&class_chart(&r.classes.iter().collect::<Vec<_>>()));
    }
    h.push_str("<h2>Errors by code</h2><table><tr><th>code</th><th>calls</th></tr>");
    for (c, n) in &r.errors_by_code {
        let _ = write!(h, "<tr><td>{}</td><td>{n}</td></tr>", esc(c));
    }
    h.push_str("</table>");
    if !r.chaos.is_empty() {
        h.push_str("<h2>Chaos</h2><table><tr><th>at</th><th>event</th></tr>");
        for c in &r.chaos {
            let _ = write!(h, "<tr><td>{:.2}s</td><td>{}</td></tr>", c.t_s, esc(&c.what));
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}
