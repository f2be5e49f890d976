//! Load generator: open MCP sessions over Streamable HTTP, then drive `tools/call` and record latency.
//!
//! Closed loop (`rate: None`): `concurrency` workers each send a call, wait for its reply, and send the next;
//! this measures throughput and latency at a fixed number of calls in flight. Open loop (`rate: Some(r)`): call
//! `k` is due at `start + k/r` and the `concurrency` workers take the due calls in turn (worker `w` sends calls
//! `w, w+c, w+2c, …`, as in wrk2); a call that goes out late because its worker was still busy is timed from
//! when it was due, so a stall shows up in the percentiles instead of silently lowering the send rate.
//!
//! Replies may be JSON or SSE; the call's response is found by its id. Calls are spread over `sessions`
//! sessions round-robin by worker, over a pool of reused HTTP/1.1 connections.

pub(crate) mod client;
mod report;
#[cfg(test)]
mod tests;

pub use client::{Client, Outcome};
pub use report::{measured_from, Report, Schedule, Stats};

use reqwest::header::HeaderValue;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// MCP endpoint, e.g. `http://127.0.0.1:8080/mcp`.
    pub url: String,
    /// Workers (closed loop: calls in flight; open loop: most calls in flight).
    pub concurrency: usize,
    /// Measured window, after warmup.
    pub duration: Duration,
    /// Calls made before the window are not recorded.
    pub warmup: Duration,
    pub tool: String,
    pub args: serde_json::Value,
    pub sessions: usize,
    /// Open loop: target calls per second.
    pub rate: Option<f64>,
    /// Extra headers on every request (e.g. `Authorization: Bearer …` for an authenticated gateway).
    pub headers: reqwest::header::HeaderMap,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            url: "http://127.0.0.1:8080/mcp".into(),
            concurrency: 1,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            tool: "echo".into(),
            args: serde_json::json!({ "text": "hello" }),
            sessions: 1,
            rate: None,
            headers: reqwest::header::HeaderMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid load settings: {0}")]
    Config(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error(
        "opening an MCP session at {url} failed: {reason}; check that the server is running and that the URL is \
         its MCP endpoint (e.g. http://127.0.0.1:8080/mcp)"
    )]
    Initialize { url: String, reason: String },
}

struct Run {
    client: Client,
    sessions: Vec<Option<HeaderValue>>,
    /// Start of the schedule (and of warmup).
    start: Instant,
    /// Calls due (open loop) or started (closed loop) before this are not recorded.
    measure: Instant,
    end: Instant,
}

/// Open the sessions, run the load, close the sessions, and report.
pub async fn run(cfg: &LoadConfig) -> Result<Report, LoadError> {
    validate(cfg)?;
    let client = Client::new(&cfg.url, &cfg.tool, &cfg.args, cfg.concurrency, cfg.headers.clone())?;
    let mut sessions = Vec::with_capacity(cfg.sessions);
    for _ in 0..cfg.sessions {
        sessions.push(client.open_session().await?);
    }
    let start = Instant::now();
    let measure = start + cfg.warmup;
    let run = Arc::new(Run { client, sessions, start, measure, end: measure + cfg.duration });
    let mut workers = JoinSet::new();
    for w in 0..cfg.concurrency {
        let run = run.clone();
        match cfg.rate {
            None => workers.spawn(closed_worker(run, w)),
            Some(rate) => workers.spawn(open_worker(run, w, cfg.concurrency, rate)),
        };
    }
    let mut total = Stats::new();
    while let Some(done) = workers.join_next().await {
        if let Ok(s) = done {
            total.merge(&s);
        }
    }
    for s in run.sessions.iter().flatten() {
        let _ = run.client.close_session(s).await;
    }
    let mode = if cfg.rate.is_some() { "open" } else { "closed" };
    Ok(Report::new(mode, cfg.concurrency, cfg.sessions, cfg.rate, cfg.duration).fill(&total))
}

fn validate(cfg: &LoadConfig) -> Result<(), LoadError> {
    let bad = |m: &str| Err(LoadError::Config(m.to_owned()));
    if cfg.concurrency == 0 {
        return bad("concurrency must be at least 1");
    }
    if cfg.sessions == 0 {
        return bad("sessions must be at least 1");
    }
    if cfg.duration.is_zero() {
        return bad("duration must be longer than 0s");
    }
    if let Some(r) = cfg.rate {
        if !(r.is_finite() && r > 0.0) {
            return bad("rate must be a positive number of calls per second");
        }
    }
    Ok(())
}

/// Worker `w`'s id space: its index in the high bits, a counter in the low bits.
fn call_id(w: usize, k: u64) -> i64 {
    ((w as i64) << 32) | (k & 0xffff_ffff) as i64
}

async fn closed_worker(run: Arc<Run>, w: usize) -> Stats {
    let session = run.sessions[w % run.sessions.len()].as_ref();
    let mut stats = Stats::new();
    for k in 0u64.. {
        let t0 = Instant::now();
        if t0 >= run.end {
            break;
        }
        let outcome = run.client.call(session, call_id(w, k)).await;
        stats.all_calls += 1;
        if t0 >= run.measure {
            stats.record(outcome, t0.elapsed());
        }
    }
    stats
}

async fn open_worker(run: Arc<Run>, w: usize, workers: usize, rate: f64) -> Stats {
    let session = run.sessions[w % run.sessions.len()].as_ref();
    let schedule = Schedule::new(run.start, rate);
    let mut stats = Stats::new();
    // Every call due before the end is sent, however late: stopping at the end would omit the backlog.
    for k in (w as u64..).step_by(workers) {
        let due = schedule.due(k);
        if due >= run.end {
            break;
        }
        let free = Instant::now();
        if free < due {
            tokio::time::sleep_until(due.into()).await;
        }
        let (from, late) = measured_from(due, free, Instant::now());
        let outcome = run.client.call(session, call_id(w, k)).await;
        stats.all_calls += 1;
        if due >= run.measure {
            stats.record(outcome, from.elapsed());
            stats.late += u64::from(late);
        }
    }
    stats
}
