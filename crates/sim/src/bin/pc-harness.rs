//! `pc-harness`: the parts of `bench/run.sh` and `bench/gate.sh` that `pc-bench` does not do.
//!
//! - `load`: the same closed/open-loop `tools/call` load and report as `pc-bench load` (it reuses
//!   `portcullis_sim::load`'s statistics), plus `--header` so that authenticated gateways can be measured.
//! - `calls`: a deterministic client for callgrind: one session, `--warmup` calls, then `--calls` calls, one at a time.
//! - `sessions`: open N sessions (`initialize` + `notifications/initialized`) and leave them idle.
//! - `gate`: instructions per call from pairs of callgrind runs, compared with `bench/callgrind-baseline.json`.
//! - `stages`: per-call inclusive instructions per function from two `callgrind_annotate --inclusive=yes` outputs.

use clap::{Parser, Subcommand};
use portcullis_sim::gate::{self, Baseline};
use portcullis_sim::load::{Client, LoadConfig, Outcome};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "pc-harness", about = "Benchmark and regression-gate helpers for bench/run.sh and bench/gate.sh")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Target {
    /// MCP endpoint, e.g. http://127.0.0.1:8080/mcp.
    #[arg(long)]
    url: String,
    /// Extra request header `Name: value` (repeatable), e.g. an `Authorization: Bearer …` token.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    #[arg(long, default_value = "echo")]
    tool: String,
    /// Tool arguments as a JSON object.
    #[arg(long, default_value = r#"{"text":"hello"}"#)]
    args: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Closed- or open-loop tools/call load; prints the same report as `pc-bench load`.
    Load {
        #[command(flatten)]
        target: Target,
        #[arg(long, short, default_value_t = 1)]
        concurrency: usize,
        #[arg(long, short, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// Open loop at this many calls/s (latency from each call's scheduled send time).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 1)]
        sessions: usize,
        #[arg(long)]
        json: bool,
    },
    /// One session, `warmup` + `calls` tools/calls one after another; fails if any call fails.
    Calls {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 50)]
        warmup: u64,
        #[arg(long, default_value_t = 200)]
        calls: u64,
    },
    /// Open `count` sessions and leave them idle (no DELETE).
    Sessions {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Sessions opened at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Compare instructions per call with the baseline; exit 1 on a regression or a missing case.
    Gate {
        #[arg(long)]
        baseline: PathBuf,
        /// `NAME=RUN_A.out:CALLS_A:RUN_B.out:CALLS_B` (callgrind output files of two runs; repeatable).
        #[arg(long = "case", required = true)]
        cases: Vec<String>,
        /// Overrides the baseline's tolerance (0.10 = 10 %).
        #[arg(long)]
        tolerance: Option<f64>,
        /// Write the measured figures as the new baseline instead of comparing.
        #[arg(long)]
        update: bool,
        /// Baseline note to store with --update.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Per-call inclusive instructions per function: (B - A) / calls from two `callgrind_annotate --inclusive=yes`
    /// outputs; prints the functions matching any `--match` substring (all if none), largest first.
    Stages {
        #[arg(long)]
        a: PathBuf,
        #[arg(long)]
        b: PathBuf,
        #[arg(long)]
        calls: u64,
        #[arg(long = "match")]
        patterns: Vec<String>,
        #[arg(long, default_value_t = 40)]
        top: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Gate { baseline, cases, tolerance, update, note } => run_gate(&baseline, &cases, tolerance, update, note),
        Cmd::Stages { a, b, calls, patterns, top } => stages(&a, &b, calls, &patterns, top),
        cmd => match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt.block_on(run_client(cmd)),
            Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
        },
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pc-harness: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn client_headers(t: &Target) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for h in &t.headers {
        let (name, value) =
            h.split_once(':').ok_or_else(|| anyhow::anyhow!("--header {h:?}: expected `Name: value`"))?;
        headers.insert(HeaderName::try_from(name.trim())?, HeaderValue::from_str(value.trim())?);
    }
    Ok(headers)
}

/// The shared load client with `--header`s, `--tool` and `--args` applied.
fn client(t: &Target, conns: usize) -> anyhow::Result<Client> {
    let headers = client_headers(t)?;
    let args: serde_json::Value = serde_json::from_str(&t.args)
        .map_err(|e| anyhow::anyhow!("--args is not valid JSON ({e}); pass an object like '{{\"text\":\"hi\"}}'"))?;
    Ok(Client::new(&t.url, &t.tool, &args, conns, headers)?)
}

async fn run_client(cmd: Cmd) -> anyhow::Result<bool> {
    match cmd {
        Cmd::Load { target, concurrency, duration, warmup, rate, sessions, json } => {
            anyhow::ensure!(concurrency > 0 && sessions > 0, "--concurrency and --sessions must be at least 1");
            anyhow::ensure!(rate.is_none_or(|r| r.is_finite() && r > 0.0), "--rate must be positive");
            let cfg = LoadConfig {
                url: target.url.clone(),
                concurrency,
                duration,
                warmup,
                tool: target.tool.clone(),
                args: serde_json::from_str(&target.args)
                    .map_err(|e| anyhow::anyhow!("--args is not valid JSON ({e})"))?,
                sessions,
                rate,
                headers: client_headers(&target)?,
            };
            let report = portcullis_sim::load::run(&cfg).await?;
            println!("{}", if json { report.to_json() } else { report.to_string() });
            Ok(true)
        }
        Cmd::Calls { target, warmup, calls } => {
            let client = client(&target, 1)?;
            let session = client.open_session().await?;
            let mut failed = 0u64;
            for k in 0..warmup + calls {
                let id = i64::try_from(k + 1).unwrap_or(i64::MAX);
                if client.call(session.as_ref(), id).await != Outcome::Ok {
                    failed += 1;
                }
            }
            if let Some(s) = &session {
                let _ = client.close_session(s).await;
            }
            println!("{} calls ({warmup} warmup), {failed} failed", warmup + calls);
            Ok(failed == 0)
        }
        Cmd::Sessions { target, count, concurrency } => {
            let client = Arc::new(client(&target, concurrency)?);
            let next = Arc::new(AtomicU64::new(0));
            let failed = Arc::new(AtomicU64::new(0));
            let t0 = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..concurrency.max(1) {
                let (client, next, failed) = (client.clone(), next.clone(), failed.clone());
                tasks.spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < count as u64 {
                        if let Err(e) = client.open_session().await {
                            if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("pc-harness: first failure: {e:#}");
                            }
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            let failed = failed.load(Ordering::Relaxed);
            println!(
                "{} sessions opened in {:.1}s, {failed} failed",
                count as u64 - failed.min(count as u64),
                t0.elapsed().as_secs_f64()
            );
            Ok(failed == 0)
        }
        Cmd::Gate { .. } | Cmd::Stages { .. } => unreachable!("handled without a runtime"),
    }
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

fn run_gate(
    baseline_path: &PathBuf,
    cases: &[String],
    tolerance: Option<f64>,
    update: bool,
    note: String,
) -> anyhow::Result<bool> {
    let mut measured = BTreeMap::new();
    for spec in cases {
        let bad = || anyhow::anyhow!("--case {spec:?}: expected NAME=RUN_A.out:CALLS_A:RUN_B.out:CALLS_B");
        let (name, rest) = spec.split_once('=').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let [a, na, b, nb] = parts.as_slice() else { return Err(bad()) };
        let total = |f: &str| {
            gate::callgrind_total(&read(&PathBuf::from(f))?)
                .ok_or_else(|| anyhow::anyhow!("{f}: no summary/totals line (did callgrind finish?)"))
        };
        let (ta, tb) = (total(a)?, total(b)?);
        let (na, nb): (u64, u64) = (na.parse().map_err(|_| bad())?, nb.parse().map_err(|_| bad())?);
        let per = gate::per_call(ta, na, tb, nb).ok_or_else(|| {
            anyhow::anyhow!("{name}: run B ({tb} Ir, {nb} calls) is not above run A ({ta} Ir, {na} calls)")
        })?;
        eprintln!("{name}: run A {ta} Ir / {na} calls, run B {tb} Ir / {nb} calls → {per} Ir per call");
        measured.insert(name.to_owned(), per);
    }
    if update {
        let old: Option<Baseline> = read(baseline_path).ok().and_then(|t| serde_json::from_str(&t).ok());
        let note = if note.is_empty() { old.as_ref().map(|b| b.note.clone()).unwrap_or_default() } else { note };
        let tolerance = tolerance.or(old.and_then(|b| b.tolerance)).or(Some(gate::DEFAULT_TOLERANCE));
        let new = Baseline { tolerance, note, cases: measured };
        std::fs::write(baseline_path, serde_json::to_string_pretty(&new)? + "\n")?;
        println!("wrote {}", baseline_path.display());
        return Ok(true);
    }
    let baseline: Baseline =
        serde_json::from_str(&read(baseline_path)?).map_err(|e| anyhow::anyhow!("{}: {e}", baseline_path.display()))?;
    let tol = tolerance.or(baseline.tolerance).unwrap_or(gate::DEFAULT_TOLERANCE);
    let verdicts = gate::compare(&baseline, &measured, tol);
    println!("instructions per tools/call (callgrind Ir), tolerance {:.0}%:", tol * 100.0);
    for v in &verdicts {
        println!("  {v}");
    }
    let ok = gate::passes(&verdicts);
    println!("{}", if ok { "gate: PASS" } else { "gate: FAIL" });
    Ok(ok)
}

fn stages(a: &PathBuf, b: &PathBuf, calls: u64, patterns: &[String], top: usize) -> anyhow::Result<bool> {
    let fa = gate::annotate_inclusive(&read(a)?);
    let fb = gate::annotate_inclusive(&read(b)?);
    let mut per: Vec<(String, u64)> = gate::per_call_functions(&fa, &fb, calls)
        .into_iter()
        .filter(|(f, _)| patterns.is_empty() || patterns.iter().any(|p| f.contains(p.as_str())))
        .collect();
    per.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    for (f, n) in per.into_iter().take(top) {
        println!("{n:>10}  {f}");
    }
    Ok(true)
}
