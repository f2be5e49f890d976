//! Latency bookkeeping: per-worker [`Stats`], the open-loop schedule, and the merged [`Report`].

use super::client::Outcome;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt;
use std::time::{Duration, Instant};

/// Highest latency tracked exactly (60 s, in µs); longer calls are recorded as this value.
const MAX_US: u64 = 60_000_000;

/// One worker's counts and latency histogram (µs, 3 significant digits).
pub struct Stats {
    pub hist: Histogram<u64>,
    pub calls: u64,
    pub errors: u64,
    pub tool_errors: u64,
    /// Open loop: sends that went out behind schedule (the system, not the generator's timer, held them up).
    pub late: u64,
    /// Every call made, warmup included (divide a process's CPU time by this).
    pub all_calls: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        let hist = Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid");
        Stats { hist, calls: 0, errors: 0, tool_errors: 0, late: 0, all_calls: 0 }
    }

    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        self.calls += 1;
        match outcome {
            Outcome::Ok => {}
            Outcome::ToolError => self.tool_errors += 1,
            Outcome::RpcError | Outcome::Failed => self.errors += 1,
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record(us);
    }

    pub fn merge(&mut self, other: &Stats) {
        // Both sides have the same bounds, so `add` cannot fail.
        let _ = self.hist.add(&other.hist);
        self.calls += other.calls;
        self.errors += other.errors;
        self.tool_errors += other.tool_errors;
        self.late += other.late;
        self.all_calls += other.all_calls;
    }
}

/// Open-loop schedule: call `k` is due at `start + k / rate`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub interval: Duration,
}

impl Schedule {
    pub fn new(start: Instant, rate: f64) -> Schedule {
        Schedule { start, interval: Duration::from_secs_f64(1.0 / rate) }
    }

    pub fn due(&self, k: u64) -> Instant {
        self.start + self.interval.mul_f64(k as f64)
    }
}

/// Where an open-loop call's latency is measured from (coordinated-omission correction).
///
/// `free` is when the worker was ready to send call `due`. If it was early, it waited for the schedule and the
/// call's latency starts when it actually went out (`sent`: timer slop is the generator's, not the system's). If
/// it was late, the system under test held it up (its previous call was slow), so the latency starts at the
/// intended send time `due` and includes the time the call spent waiting to be sent.
pub fn measured_from(due: Instant, free: Instant, sent: Instant) -> (Instant, bool) {
    if free > due {
        (due, true)
    } else {
        (sent, false)
    }
}

/// The result of one run. Latencies are in µs.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `closed` or `open`.
    pub mode: &'static str,
    pub concurrency: usize,
    pub sessions: usize,
    /// Target calls/s in open-loop mode.
    pub rate: Option<f64>,
    /// Length of the measured window, after warmup.
    pub seconds: f64,
    pub calls: u64,
    /// HTTP status other than 200, transport failures, and JSON-RPC error responses.
    pub errors: u64,
    /// `isError: true` results (not counted in `errors`).
    pub tool_errors: u64,
    pub late: u64,
    /// Calls including warmup.
    pub all_calls: u64,
    /// Calls completed per second.
    pub throughput: f64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Report {
    pub fn new(mode: &'static str, concurrency: usize, sessions: usize, rate: Option<f64>, window: Duration) -> Self {
        Report {
            mode,
            concurrency,
            sessions,
            rate,
            seconds: window.as_secs_f64(),
            calls: 0,
            errors: 0,
            tool_errors: 0,
            late: 0,
            all_calls: 0,
            throughput: 0.0,
            mean_us: 0.0,
            p50_us: 0,
            p90_us: 0,
            p99_us: 0,
            p999_us: 0,
            max_us: 0,
        }
    }

    pub fn fill(mut self, s: &Stats) -> Report {
        let h = &s.hist;
        self.calls = s.calls;
        self.errors = s.errors;
        self.tool_errors = s.tool_errors;
        self.late = s.late;
        self.all_calls = s.all_calls;
        self.throughput = if self.seconds > 0.0 { s.calls as f64 / self.seconds } else { 0.0 };
        if !h.is_empty() {
            self.mean_us = h.mean();
            self.p50_us = h.value_at_quantile(0.50);
            self.p90_us = h.value_at_quantile(0.90);
            self.p99_us = h.value_at_quantile(0.99);
            self.p999_us = h.value_at_quantile(0.999);
            self.max_us = h.max();
        }
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rate {
            Some(r) => write!(f, "open rate={r}/s c={}", self.concurrency)?,
            None => write!(f, "closed c={}", self.concurrency)?,
        }
        write!(
            f,
            " s={}: {} calls in {:.2}s = {:.0} calls/s, errors {} (tool {}), p50 {}µs p90 {}µs p99 {}µs p99.9 {}µs max {}µs",
            self.sessions,
            self.calls,
            self.seconds,
            self.throughput,
            self.errors,
            self.tool_errors,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us
        )?;
        if self.rate.is_some() {
            write!(f, ", late sends {}", self.late)?;
        }
        Ok(())
    }
}
