//! `portcullis loadtest`: run a [`Scenario`] — start its mock upstreams and gateway, open sessions per flow,
//! send open-loop `tools/call` traffic, break things on the chaos schedule — and report ([`LoadReport`]).
//!
//! Open loop: every flow's calls are due on its arrival schedule whatever the system does. At most
//! `max_in_flight` calls are outstanding; a call that could not go out when due (every slot busy) is timed from
//! when it was due, not from when it was sent, so a stall shows in the percentiles instead of silently lowering
//! the send rate (coordinated-omission correction, as in wrk2).

mod arrival;
mod client;
pub mod html;
mod procs;
mod report;
mod scenario;
#[cfg(test)]
mod tests;

pub use arrival::{ArrivalKind, ArrivalSpec, Arrivals};
pub use report::{judge, LoadReport, Outcome, Sample, Tally};
pub use scenario::Scenario;

use crate::load::measured_from;
use client::Endpoint;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::HeaderValue;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;

/// How to run a scenario.
pub struct Options {
    /// The `portcullis` binary (runs `serve` and `mock-server`).
    pub exe: PathBuf,
    /// Draw a live progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

/// A flow ready to run.
struct Flow {
    class: usize,
    endpoint: Endpoint,
    sessions: Vec<Option<HeaderValue>>,
    /// Cumulative weights (ending at 1) and the serialized `params` of each tool.
    tools: Vec<(f64, String)>,
}

impl Flow {
    fn pick(&self, u: f64) -> &str {
        let i = self.tools.iter().position(|t| u < t.0).unwrap_or(self.tools.len() - 1);
        &self.tools[i].1
    }
}

/// Run the scenario end to end; errors are setup failures (the run's own failures are in the report).
pub async fn run(sc: &Scenario, opts: &Options) -> Result<LoadReport, String> {
    let tmp = tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    // Minting first: it creates the dev key's JWKS, which the gateway reads at startup.
    let tokens = tokens(sc)?;
    let mut mocks = Vec::new();
    for (i, m) in sc.mocks.iter().enumerate() {
        let cfg = tmp.path().join(format!("mock-{}.toml", m.name));
        let text = toml::to_string(&m.config).map_err(|e| format!("mock {:?}: {e}", m.name))?;
        sc.mock_spec(i)?;
        std::fs::write(&cfg, text).map_err(|e| format!("cannot write {}: {e}", cfg.display()))?;
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        mocks.push(procs::Mock::start(&opts.exe, &m.name, cfg, tmp.path(), any).await?);
    }
    let (gateway, base) = match (&sc.target.gateway_config, &sc.target.url) {
        (Some(cfg), _) => {
            let (p, url) = start_gateway(sc, &sc.dir.join(cfg), &mocks, &opts.exe, tmp.path()).await?;
            (Some(p), url)
        }
        (None, Some(url)) => (None, url.trim_end_matches('/').to_owned()),
        (None, None) => return Err(format!("{}: target: set gateway_config or url", sc.file)),
    };
    let result = drive(sc, opts, &base, &tokens, mocks, tmp.path()).await;
    if let Some(g) = gateway {
        procs::stop(g).await;
    }
    let (report, mocks) = result?;
    for m in mocks {
        if let Some(p) = m.proc {
            procs::stop(p).await;
        }
    }
    Ok(report)
}

async fn start_gateway(
    sc: &Scenario,
    path: &std::path::Path,
    mocks: &[procs::Mock],
    exe: &std::path::Path,
    tmp: &std::path::Path,
) -> Result<(procs::Proc, String), String> {
    let mut text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: target.gateway_config: cannot read {}: {e}", sc.file, path.display()))?;
    for m in mocks {
        text = text.replace(&format!("${{mock.{}}}", m.name), &m.url());
    }
    let dir = std::fs::canonicalize(path.parent().unwrap_or(std::path::Path::new(".")))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    text = text.replace("${dir}", &dir.display().to_string());
    let live = text.lines().filter(|l| !l.trim_start().starts_with('#'));
    if let Some(i) = live.clone().find_map(|l| l.find("${mock.").map(|i| (l, i))) {
        let name: String = i.0[i.1 + 7..].chars().take_while(|c| *c != '}').collect();
        return Err(format!("{}: ${{mock.{name}}}: no [[mock]] named {name:?} in {}", path.display(), sc.file));
    }
    let cfg = tmp.join("gateway.toml");
    std::fs::write(&cfg, text).map_err(|e| format!("cannot write {}: {e}", cfg.display()))?;
    let args = ["serve".to_owned(), "-c".to_owned(), cfg.display().to_string()];
    let p = procs::start(exe, &args, &tmp.join("gateway.log"), "Portcullis is listening on").await?;
    let url = format!("http://{}{}", p.addr, sc.target.path);
    Ok((p, url))
}

/// The bearer token of each principal, by name.
fn tokens(sc: &Scenario) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    for p in &sc.principals {
        let token = match (&p.token, &sc.auth) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(a)) => {
                let (key, jwks) = (sc.dir.join(&a.signing_key), sc.dir.join(&a.jwks));
                portcullis_auth::generate_dev_key(&key, &jwks).map_err(|e| format!("{}: auth: {e}", sc.file))?;
                let t =
                    portcullis_auth::mint_dev_token(&key, &a.issuer, &a.audience, &p.name, &p.roles, &p.scopes, a.ttl)
                        .map_err(|e| format!("{}: principal {:?}: {e}", sc.file, p.name))?;
                Some(t)
            }
            (None, None) => None,
        };
        out.push((p.name.clone(), token));
    }
    Ok(out)
}

fn classes(sc: &Scenario) -> Vec<String> {
    let mut c: Vec<String> = Vec::new();
    for f in &sc.flows {
        if !c.contains(&f.class) {
            c.push(f.class.clone());
        }
    }
    c
}

type Tokens = [(String, Option<String>)];

async fn open_flows(sc: &Scenario, base: &str, tokens: &Tokens, classes: &[String]) -> Result<Vec<Arc<Flow>>, String> {
    let http = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(sc.max_in_flight)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut flows = Vec::new();
    for f in &sc.flows {
        let url = match &f.topic {
            Some(t) => format!("{base}/{t}"),
            None => base.to_owned(),
        };
        let token = f.principal.as_ref().and_then(|p| tokens.iter().find(|t| &t.0 == p)).and_then(|t| t.1.clone());
        let auth = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .map_err(|_| format!("flow {:?}: the principal's token is not a valid header value", f.name))?;
        let endpoint = Endpoint { http: http.clone(), url: url.clone(), auth };
        let mut sessions = Vec::new();
        for _ in 0..f.sessions {
            let s = endpoint.open_session().await.map_err(|e| {
                format!("flow {:?}: opening an MCP session at {url} failed: {e}; check the target and the flow's topic/principal", f.name)
            })?;
            sessions.push(s);
        }
        let total: f64 = f.tools.iter().map(|t| t.weight).sum();
        let mut acc = 0.0;
        let class = classes.iter().position(|c| c == &f.class).unwrap_or(0);
        let tools = f
            .tools
            .iter()
            .map(|t| {
                acc += t.weight / total;
                let params = serde_json::json!({
                    "name": t.name,
                    "arguments": t.args,
                    "_meta": { "io.portcullis/priority": f.class },
                });
                (acc, params.to_string())
            })
            .collect();
        flows.push(Arc::new(Flow { class, endpoint, sessions, tools }));
    }
    Ok(flows)
}

async fn drive(
    sc: &Scenario,
    opts: &Options,
    base: &str,
    tokens: &Tokens,
    mocks: Vec<procs::Mock>,
    tmp: &std::path::Path,
) -> Result<(LoadReport, Vec<procs::Mock>), String> {
    let classes = classes(sc);
    let flows = match open_flows(sc, base, tokens, &classes).await {
        Ok(f) => f,
        Err(e) => {
            let logs: Vec<String> = mocks.iter().map(|m| m.log.display().to_string()).collect();
            let gw = procs::tail(&tmp.join("gateway.log"), 10);
            return Err(format!("{e}\n(mock logs: {}; gateway log tail:\n{gw})", logs.join(", ")));
        }
    };
    let warmup = sc.warmup.unwrap_or_default();
    let (tx, rx) = mpsc::channel::<Sample>(8192);
    let bar = if opts.progress { progress_bar(sc.duration) } else { ProgressBar::hidden() };
    let tally = Tally::new(classes, warmup, sc.bucket);
    let start = Instant::now();
    let aggregator = tokio::spawn(aggregate(rx, tally, bar.clone(), start));
    let (stop_chaos, stop_rx) = oneshot::channel();
    let chaos =
        tokio::spawn(procs::run_chaos(opts.exe.clone(), tmp.to_path_buf(), sc.chaos.clone(), mocks, start, stop_rx));
    let sem = Arc::new(Semaphore::new(sc.max_in_flight));
    let ids = Arc::new(AtomicI64::new(1));
    let mut dispatchers = JoinSet::new();
    for (i, (flow, spec)) in flows.iter().zip(&sc.flows).enumerate() {
        let seed = sc.seed.wrapping_add(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let arrivals = spec.arrival.arrivals(sc.duration, seed);
        let d = Dispatch {
            flow: flow.clone(),
            start,
            sem: sem.clone(),
            tx: tx.clone(),
            ids: ids.clone(),
            timeout: sc.timeout,
        };
        dispatchers.spawn(d.run(arrivals, StdRng::seed_from_u64(seed ^ 1)));
    }
    drop(tx);
    while dispatchers.join_next().await.is_some() {}
    let tally = aggregator.await.map_err(|e| format!("the report task failed: {e}"))?;
    bar.finish_and_clear();
    let _ = stop_chaos.send(());
    let (mocks, events) = chaos.await.map_err(|e| format!("the chaos task failed: {e}"))?;
    for f in &flows {
        for s in f.sessions.iter().flatten() {
            f.endpoint.close_session(s).await;
        }
    }
    let window = sc.duration.saturating_sub(warmup);
    Ok((tally.report(&sc.name(), window, sc.slo.as_ref(), events), mocks))
}

fn progress_bar(duration: Duration) -> ProgressBar {
    let bar = ProgressBar::new(duration.as_millis() as u64);
    let style = ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:30}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// Fold samples into the tally, refreshing the progress line a few times a second.
async fn aggregate(mut rx: mpsc::Receiver<Sample>, mut tally: Tally, bar: ProgressBar, start: Instant) -> Tally {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            s = rx.recv() => match s {
                Some(s) => tally.record(&s),
                None => return tally,
            },
            _ = tick.tick() => {
                let (calls, errors, shed, p99) = tally.live();
                let secs = start.elapsed().as_secs_f64().max(1e-3);
                bar.set_position(start.elapsed().as_millis() as u64);
                bar.set_message(format!(
                    "{calls} calls ({:.0}/s), {errors} errors, {shed} shed, p99 {p99:.2} ms",
                    calls as f64 / secs
                ));
            }
        }
    }
}

struct Dispatch {
    flow: Arc<Flow>,
    start: Instant,
    sem: Arc<Semaphore>,
    tx: mpsc::Sender<Sample>,
    ids: Arc<AtomicI64>,
    timeout: Duration,
}

impl Dispatch {
    /// Send each call when due (or as soon as a slot frees up), then wait for the calls in flight.
    async fn run(self, arrivals: Arrivals, mut rng: StdRng) {
        let mut calls = JoinSet::new();
        for (k, offset) in arrivals.enumerate() {
            let due = self.start + offset;
            let Ok(permit) = self.sem.clone().acquire_owned().await else { break };
            let free = Instant::now();
            if free < due {
                tokio::time::sleep_until(due.into()).await;
            }
            while calls.try_join_next().is_some() {}
            let flow = self.flow.clone();
            let params = flow.pick(rng.random::<f64>()).to_owned();
            let (tx, id, timeout) = (self.tx.clone(), self.ids.fetch_add(1, Relaxed), self.timeout);
            calls.spawn(async move {
                let (from, late) = measured_from(due, free, Instant::now());
                let session = flow.sessions[k % flow.sessions.len()].as_ref();
                let outcome = flow.endpoint.call(session, id, &params, timeout).await;
                let latency = from.elapsed();
                drop(permit);
                let _ = tx.send(Sample { class: flow.class, due: offset, latency, outcome, late }).await;
            });
        }
        while calls.join_next().await.is_some() {}
    }
}
