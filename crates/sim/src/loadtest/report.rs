//! Counting the run: every finished call becomes a [`Sample`]; the [`Tally`] folds samples into histograms per
//! class and per time bucket, and [`Tally::report`] turns it into the [`LoadReport`] with the SLO verdict.

use super::scenario::{Limits, SloSpec};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Highest latency tracked (60 s, in µs); longer calls are recorded as this value.
const MAX_US: u64 = 60_000_000;

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A result with `isError: true`.
    ToolError,
    /// A JSON-RPC error response with this code (also when it came with a non-200 status).
    Rpc(i64),
    /// A non-200 status without a JSON-RPC error in the body.
    Http(u16),
    /// Connection refused or reset, or a reply without the call's response.
    Transport,
    /// No answer within the scenario's `timeout`.
    Timeout,
}

impl Outcome {
    /// Refused by load shedding or rate limiting: -32012 (overloaded), -32011 (rate limited), HTTP 429 or 503.
    pub fn is_shed(self) -> bool {
        matches!(self, Outcome::Rpc(-32012 | -32011) | Outcome::Http(429 | 503))
    }

    /// The key in `errors_by_code`; `None` for success.
    pub fn code(self) -> Option<String> {
        match self {
            Outcome::Ok => None,
            Outcome::ToolError => Some("isError".into()),
            Outcome::Rpc(c) => Some(c.to_string()),
            Outcome::Http(s) => Some(format!("http {s}")),
            Outcome::Transport => Some("transport".into()),
            Outcome::Timeout => Some("timeout".into()),
        }
    }
}

/// One finished call.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub class: usize,
    /// When the call was due, from the start of the run.
    pub due: Duration,
    /// From when it was due (if it went out late) or sent, to its answer.
    pub latency: Duration,
    pub outcome: Outcome,
    /// It went out after it was due (every `max_in_flight` slot was busy, or the sender itself fell behind).
    pub late: bool,
}

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, sigfig).expect("constant histogram bounds are valid")
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

struct Counts {
    hist: Histogram<u64>,
    calls: u64,
    ok: u64,
    shed: u64,
}

impl Counts {
    fn new(sigfig: u8) -> Counts {
        Counts { hist: histogram(sigfig), calls: 0, ok: 0, shed: 0 }
    }

    fn add(&mut self, s: &Sample) {
        self.calls += 1;
        self.ok += u64::from(s.outcome == Outcome::Ok);
        self.shed += u64::from(s.outcome.is_shed());
        self.hist.saturating_record(us(s.latency));
    }
}

/// Everything counted so far.
pub struct Tally {
    classes: Vec<String>,
    warmup: Duration,
    bucket: Duration,
    all: Counts,
    per_class: Vec<Counts>,
    by_code: BTreeMap<String, u64>,
    timeline: Vec<Counts>,
    late: u64,
    /// Calls including warmup.
    pub all_calls: u64,
}

impl Tally {
    pub fn new(classes: Vec<String>, warmup: Duration, bucket: Duration) -> Tally {
        let per_class = classes.iter().map(|_| Counts::new(3)).collect();
        Tally {
            classes,
            warmup,
            bucket,
            all: Counts::new(3),
            per_class,
            by_code: BTreeMap::new(),
            timeline: Vec::new(),
            late: 0,
            all_calls: 0,
        }
    }

    pub fn record(&mut self, s: &Sample) {
        self.all_calls += 1;
        if s.due < self.warmup {
            return;
        }
        self.all.add(s);
        if let Some(c) = self.per_class.get_mut(s.class) {
            c.add(s);
        }
        if let Some(code) = s.outcome.code() {
            *self.by_code.entry(code).or_default() += 1;
        }
        self.late += u64::from(s.late);
        let b = (s.due.as_nanos() / self.bucket.as_nanos().max(1)) as usize;
        if self.timeline.len() <= b {
            // Two significant digits: enough for a chart, and a tenth of the memory per bucket.
            self.timeline.resize_with(b + 1, || Counts::new(2));
        }
        self.timeline[b].add(s);
    }

    /// (calls, errors, shed, p99 ms) so far, for the progress line.
    pub fn live(&self) -> (u64, u64, u64, f64) {
        let h = &self.all.hist;
        let p99 = if h.is_empty() { 0.0 } else { h.value_at_quantile(0.99) as f64 / 1000.0 };
        (self.all.calls, self.all.calls - self.all.ok, self.all.shed, p99)
    }

    /// The report over a measured window of `window`, judged against `slo`.
    pub fn report(
        &self,
        scenario: &str,
        window: Duration,
        slo: Option<&SloSpec>,
        chaos: Vec<ChaosEvent>,
    ) -> LoadReport {
        let secs = window.as_secs_f64();
        let all = figures(&self.all, secs);
        let classes: BTreeMap<String, Figures> =
            self.classes.iter().zip(&self.per_class).map(|(n, c)| (n.clone(), figures(c, secs))).collect();
        let bucket_s = self.bucket.as_secs_f64();
        let timeline = self
            .timeline
            .iter()
            .enumerate()
            .map(|(i, c)| Point {
                t_s: i as f64 * bucket_s,
                calls: c.calls,
                errors: c.calls - c.ok,
                shed: c.shed,
                p50_ms: quantile_ms(&c.hist, 0.5),
                p99_ms: quantile_ms(&c.hist, 0.99),
            })
            .collect();
        let slo = judge(slo, &all, &classes);
        LoadReport {
            scenario: scenario.to_owned(),
            window_s: secs,
            all,
            late: self.late,
            all_calls: self.all_calls,
            errors_by_code: self.by_code.clone(),
            classes,
            bucket_s,
            timeline,
            chaos,
            slo,
        }
    }
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

fn figures(c: &Counts, secs: f64) -> Figures {
    let h = &c.hist;
    let rate = |n: u64| if c.calls == 0 { 0.0 } else { n as f64 / c.calls as f64 };
    Figures {
        calls: c.calls,
        ok: c.ok,
        errors: c.calls - c.ok,
        error_rate: rate(c.calls - c.ok),
        shed: c.shed,
        shed_rate: rate(c.shed),
        throughput: if secs > 0.0 { c.calls as f64 / secs } else { 0.0 },
        latency_ms: Latencies {
            mean: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            p50: quantile_ms(h, 0.5),
            p90: quantile_ms(h, 0.9),
            p99: quantile_ms(h, 0.99),
            p999: quantile_ms(h, 0.999),
            max: if h.is_empty() { 0.0 } else { h.max() as f64 / 1000.0 },
        },
    }
}

/// Latency percentiles in milliseconds, corrected for coordinated omission (see `Sample::latency`).
#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The figures of the whole run or of one class.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Calls due in the measured window (all of them finished: answered, failed or timed out).
    pub calls: u64,
    pub ok: u64,
    /// Calls that did not succeed, shed calls and `isError` results included.
    pub errors: u64,
    pub error_rate: f64,
    pub shed: u64,
    pub shed_rate: f64,
    /// Calls per second of the measured window.
    pub throughput: f64,
    pub latency_ms: Latencies,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub t_s: f64,
    pub calls: u64,
    pub errors: u64,
    pub shed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChaosEvent {
    pub t_s: f64,
    pub what: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SloCheck {
    /// `all` or `class NAME`.
    pub scope: String,
    pub key: String,
    pub limit: f64,
    /// `null` when the scope had no calls.
    pub actual: Option<f64>,
    pub pass: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub pass: bool,
    pub checks: Vec<SloCheck>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub scenario: String,
    pub window_s: f64,
    #[serde(flatten)]
    pub all: Figures,
    pub late: u64,
    pub all_calls: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub classes: BTreeMap<String, Figures>,
    pub bucket_s: f64,
    pub timeline: Vec<Point>,
    pub chaos: Vec<ChaosEvent>,
    pub slo: Verdict,
}

/// Check each declared limit. A scope with no calls fails every limit declared for it.
pub fn judge(slo: Option<&SloSpec>, all: &Figures, classes: &BTreeMap<String, Figures>) -> Verdict {
    let mut checks = Vec::new();
    if let Some(slo) = slo {
        check(&mut checks, "all", &slo.all(), Some(all));
        for (name, limits) in &slo.class {
            check(&mut checks, &format!("class {name}"), limits, classes.get(name));
        }
    }
    Verdict { pass: checks.iter().all(|c| c.pass), checks }
}

fn check(out: &mut Vec<SloCheck>, scope: &str, l: &Limits, f: Option<&Figures>) {
    let f = f.filter(|f| f.calls > 0);
    let mut push = |key: &str, limit: Option<f64>, actual: Option<f64>, at_least: bool| {
        if let Some(limit) = limit {
            let pass = actual.is_some_and(|a| if at_least { a >= limit } else { a <= limit });
            out.push(SloCheck { scope: scope.into(), key: key.into(), limit, actual, pass });
        }
    };
    let lat = f.map(|f| &f.latency_ms);
    push("p50_ms", l.p50_ms, lat.map(|x| x.p50), false);
    push("p90_ms", l.p90_ms, lat.map(|x| x.p90), false);
    push("p99_ms", l.p99_ms, lat.map(|x| x.p99), false);
    push("p999_ms", l.p999_ms, lat.map(|x| x.p999), false);
    push("max_ms", l.max_ms, lat.map(|x| x.max), false);
    push("error_rate", l.error_rate, f.map(|f| f.error_rate), false);
    push("shed_rate", l.shed_rate, f.map(|f| f.shed_rate), false);
    push("min_throughput", l.min_throughput, f.map(|f| f.throughput), true);
}
