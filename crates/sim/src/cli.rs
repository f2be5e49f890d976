//! The `mock-server` and `loadtest` subcommands: clap argument structs and entry points, so the `portcullis`
//! binary only forwards to them. Exit codes: 0 success, 1 an SLO failed (loadtest) or the server failed,
//! 2 bad configuration or the scenario could not start.

use crate::loadtest::{self, LoadReport, Options, Scenario};
use crate::mock::{self, CrashMode, Latency, MockSpec, ToolSpec};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct MockServerArgs {
    /// Serve Streamable HTTP at http://ADDR/mcp (port 0 picks a free port; the URL is printed on stdout).
    #[arg(long, conflicts_with = "stdio", required_unless_present = "stdio")]
    pub listen: Option<SocketAddr>,
    /// Serve newline-delimited JSON-RPC on stdin/stdout instead.
    #[arg(long)]
    pub stdio: bool,
    /// A TOML file with `[[tool]]` entries (see README.md, "Load and chaos testing"); replaces the per-tool flags.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Seed of every random draw (same seed, same latencies and faults, call by call per tool).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Latency of `work`: `5ms`, `uniform:1ms..10ms`, `normal:p50=5ms,p99=20ms`, `lognormal:p50=5ms,p99=80ms`,
    /// `exp:mean=5ms` (`echo` answers at once).
    #[arg(long, conflicts_with = "config")]
    pub latency: Option<String>,
    /// Minimum result text size in bytes.
    #[arg(long, conflicts_with = "config")]
    pub result_bytes: Option<usize>,
    /// Share of calls answered with `isError: true`.
    #[arg(long, conflicts_with = "config")]
    pub error_rate: Option<f64>,
    /// Share of calls answered with a JSON-RPC error (-32603).
    #[arg(long, conflicts_with = "config")]
    pub rpc_error_rate: Option<f64>,
    /// Share of calls that crash the server (see --crash-mode).
    #[arg(long, conflicts_with = "config")]
    pub crash_rate: Option<f64>,
    /// Share of calls never answered.
    #[arg(long, conflicts_with = "config")]
    pub hang_rate: Option<f64>,
    /// Progress notifications per call (sent when the request has a progressToken).
    #[arg(long, conflicts_with = "config")]
    pub progress: Option<u32>,
    /// Over HTTP, stream every answer as SSE with pauses between progress events.
    #[arg(long, conflicts_with = "config")]
    pub drip: bool,
    /// Send notifications/tools/list_changed this often (HTTP: on each session's GET stream).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub list_changed_every: Option<Duration>,
    /// HTTP only: `exit` ends the process on a crash, `drop` only drops that call's connection.
    #[arg(long, value_enum)]
    pub crash_mode: Option<CrashMode>,
    /// HTTP only: serve POST /control to flip chaos switches at run time (the loadtest's chaos schedule uses it).
    #[arg(long)]
    pub control: bool,
}

fn spec_from(a: &MockServerArgs) -> Result<MockSpec, String> {
    let mut spec = match &a.config {
        Some(path) => MockSpec::load(path)?,
        None => {
            let latency = match &a.latency {
                Some(l) => Latency::parse(l).map_err(|e| format!("--latency: {e}"))?,
                None => Latency::ZERO,
            };
            let tool = ToolSpec {
                latency,
                result_bytes: a.result_bytes.unwrap_or(64),
                error_rate: a.error_rate.unwrap_or(0.0),
                rpc_error_rate: a.rpc_error_rate.unwrap_or(0.0),
                crash_rate: a.crash_rate.unwrap_or(0.0),
                hang_rate: a.hang_rate.unwrap_or(0.0),
                progress: a.progress.unwrap_or(0),
                drip: a.drip,
                ..ToolSpec::new("work")
            };
            MockSpec::echo_and_work(tool, 0)
        }
    };
    if let Some(s) = a.seed {
        spec.seed = s;
    }
    if let Some(e) = a.list_changed_every {
        spec.list_changed_every = Some(e);
    }
    if let Some(m) = a.crash_mode {
        spec.crash_mode = m;
    }
    // Flag errors name the flag: tool[1].error_rate is --error-rate.
    spec.validate().map_err(|(key, why)| {
        let flag = key.rsplit('.').next().unwrap_or(&key).replace('_', "-");
        if a.config.is_some() {
            format!("{}: {key}: {why}", a.config.as_ref().map(|p| p.display().to_string()).unwrap_or_default())
        } else {
            format!("--{flag}: {why}")
        }
    })?;
    Ok(spec)
}

/// `portcullis mock-server`.
pub async fn mock_server(a: MockServerArgs) -> ExitCode {
    let spec = match spec_from(&a) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("portcullis mock-server: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(addr) = a.listen else {
        return match mock::serve_stdio_spec(spec).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("portcullis mock-server: stdio failed: {e}");
                ExitCode::from(1)
            }
        };
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("portcullis mock-server: cannot listen on {addr}: {e}; pick another --listen address");
            return ExitCode::from(1);
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    let names: Vec<&str> = spec.tools.iter().map(|t| t.name.as_str()).collect();
    println!("portcullis mock-server listening on http://{local}/mcp (tools: {})", names.join(", "));
    match mock::serve_http_spec(listener, spec, a.control).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis mock-server: {e}");
            ExitCode::from(1)
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct LoadtestArgs {
    /// The scenario file (see examples/scenarios/).
    pub scenario: PathBuf,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report with charts.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// No live progress line.
    #[arg(long, short)]
    pub quiet: bool,
    /// The portcullis binary that runs the gateway and the mocks (default: this one).
    #[arg(long, value_name = "PATH")]
    pub portcullis: Option<PathBuf>,
}

/// `portcullis loadtest`: exit 0 when every SLO holds, 1 when one fails, 2 when the scenario cannot run.
pub async fn loadtest(a: LoadtestArgs) -> ExitCode {
    let fail = |e: String| {
        eprintln!("portcullis loadtest: {e}");
        ExitCode::from(2)
    };
    let sc = match Scenario::load(&a.scenario) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let exe = match a.portcullis.clone().map_or_else(std::env::current_exe, Ok) {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot find the portcullis binary ({e}); pass --portcullis PATH")),
    };
    let opts = Options { exe, progress: !a.quiet };
    // On Ctrl-C the run is dropped, which kills the mocks and the gateway it started (kill_on_drop).
    let report = tokio::select! {
        r = loadtest::run(&sc, &opts) => match r {
            Ok(r) => r,
            Err(e) => return fail(e),
        },
        _ = tokio::signal::ctrl_c() => return fail("interrupted; no report".into()),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", summary(&report));
    }
    if let Some(path) = &a.html {
        if let Err(e) = std::fs::write(path, loadtest::html::render(&report)) {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
        eprintln!("HTML report: {}", path.display());
    }
    if report.slo.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The human-readable report.
pub fn summary(r: &LoadReport) -> String {
    let mut s = String::new();
    let a = &r.all;
    let l = &a.latency_ms;
    let _ = writeln!(
        s,
        "scenario {}: {} calls in {:.1}s = {:.1} calls/s ({} sent late)",
        r.scenario, a.calls, r.window_s, a.throughput, r.late
    );
    let _ = writeln!(
        s,
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (mean {:.2})",
        l.p50, l.p90, l.p99, l.p999, l.max, l.mean
    );
    let _ = writeln!(
        s,
        "errors {} ({:.2}%), shed {} ({:.2}%)",
        a.errors,
        a.error_rate * 100.0,
        a.shed,
        a.shed_rate * 100.0
    );
    for (code, n) in &r.errors_by_code {
        let _ = writeln!(s, "  {code}: {n}");
    }
    for (name, f) in &r.classes {
        let _ = writeln!(
            s,
            "class {name}: {} calls, p50 {:.2} ms, p99 {:.2} ms, errors {:.2}%, shed {:.2}%",
            f.calls,
            f.latency_ms.p50,
            f.latency_ms.p99,
            f.error_rate * 100.0,
            f.shed_rate * 100.0
        );
    }
    for c in &r.chaos {
        let _ = writeln!(s, "chaos at {:.2}s: {}", c.t_s, c.what);
    }
    for c in &r.slo.checks {
        let actual = c.actual.map_or("no calls".into(), |v| format!("{v:.4}"));
        let v = if c.pass { "pass" } else { "FAIL" };
        let op = if c.key == "min_throughput" { ">=" } else { "<=" };
        let _ = writeln!(s, "SLO {} {} {op} {}: {actual} {v}", c.scope, c.key, c.limit);
    }
    let _ = writeln!(s, "SLO verdict: {}", if r.slo.pass { "PASS" } else { "FAIL" });
    s
}
