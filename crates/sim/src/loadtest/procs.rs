//! The processes a scenario starts: mock upstreams (`portcullis mock-server --listen 127.0.0.1:0 --control`) and
//! the gateway (`portcullis serve`), each reporting its address on stdout and logging to a file in the run's
//! temporary directory; and the chaos schedule that kills, restarts and reconfigures the mocks.

use super::report::ChaosEvent;
use super::scenario::{ChaosAction, ChaosSpec};
use crate::mock::Control;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// How long a child may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A started child, stopped with SIGTERM (then SIGKILL) by [`stop`], killed if dropped.
pub struct Proc {
    child: Child,
    pub addr: SocketAddr,
}

/// Start `exe args…`, wait for a stdout line containing `marker` followed by `http://ADDR`, and return its address.
pub async fn start(exe: &Path, args: &[String], log: &Path, marker: &str) -> Result<Proc, String> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot create the log file {}: {e}", log.display()))?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {} {}: {e}", exe.display(), args.join(" ")))?;
    let what = || format!("`{} {}`", exe.display(), args.join(" "));
    let Some(out) = child.stdout.take() else {
        return Err(format!("{}: no stdout", what()));
    };
    let mut lines = BufReader::new(out).lines();
    let found = tokio::time::timeout(START_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split_once(marker).and_then(|(_, r)| r.split_once("http://")).map(|(_, r)| r) {
                let addr = rest.split(['/', ' ']).next().unwrap_or_default();
                return addr.parse::<SocketAddr>().ok();
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(addr)) => {
            // Keep reading stdout so the child never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Ok(Proc { child, addr })
        }
        Ok(None) | Err(_) => {
            let _ = child.kill().await;
            Err(format!("{} did not start; last lines of {}:\n{}", what(), log.display(), tail(log, 20)))
        }
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// SIGTERM, up to 5 s to exit, then SIGKILL; reaped either way.
pub async fn stop(mut p: Proc) {
    if let Some(pid) = p.child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), p.child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = p.child.kill().await;
}

/// One mock upstream: its config file, address, and process (none while killed).
pub struct Mock {
    pub name: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub addr: SocketAddr,
    pub proc: Option<Proc>,
}

impl Mock {
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub async fn start(
        exe: &Path,
        name: &str,
        config: PathBuf,
        dir: &Path,
        listen: SocketAddr,
    ) -> Result<Mock, String> {
        let log = dir.join(format!("mock-{name}.log"));
        let args = ["mock-server", "--listen", &listen.to_string(), "--control", "--config"].map(String::from);
        let mut args = args.to_vec();
        args.push(config.display().to_string());
        let p = start(exe, &args, &log, "listening on").await.map_err(|e| format!("mock {name:?}: {e}"))?;
        Ok(Mock { name: name.into(), config, log, addr: p.addr, proc: Some(p) })
    }
}

/// One step of the chaos schedule.
enum Act {
    Kill(usize),
    Restart(usize),
    Control(usize, Control),
}

/// Turn the scenario's chaos entries into a sorted list of timed acts (undo steps included).
fn schedule(specs: &[ChaosSpec], mocks: &[Mock]) -> Vec<(Duration, Act, String)> {
    let mut acts = Vec::new();
    for c in specs {
        let Some(i) = mocks.iter().position(|m| m.name == c.mock) else { continue };
        let m = &c.mock;
        let ctl = |c: Control| Act::Control(i, c);
        let (act, label, undo) = match c.action {
            ChaosAction::Kill => {
                (Act::Kill(i), format!("kill mock {m}"), Some((Act::Restart(i), format!("restart mock {m}"))))
            }
            ChaosAction::Hang => (
                ctl(Control { hang: Some(true), ..Control::default() }),
                format!("hang mock {m}"),
                Some((ctl(Control { hang: Some(false), ..Control::default() }), format!("unhang mock {m}"))),
            ),
            ChaosAction::Drop => (
                ctl(Control { drop: Some(true), ..Control::default() }),
                format!("drop connections to mock {m}"),
                Some((ctl(Control { drop: Some(false), ..Control::default() }), format!("stop dropping mock {m}"))),
            ),
            ChaosAction::Latency => {
                let ms = c.add.unwrap_or_default().as_millis() as u64;
                (
                    ctl(Control { add_latency_ms: Some(ms), ..Control::default() }),
                    format!("add {ms}ms to mock {m}"),
                    Some((
                        ctl(Control { add_latency_ms: Some(0), ..Control::default() }),
                        format!("remove added latency of mock {m}"),
                    )),
                )
            }
            ChaosAction::Rotate => {
                let t = c.tool.clone().unwrap_or_default();
                (
                    ctl(Control { rotate: Some(t.clone()), ..Control::default() }),
                    format!("rotate tool {t} of mock {m}"),
                    None,
                )
            }
            ChaosAction::ListChanged => (
                ctl(Control { list_changed: Some(true), ..Control::default() }),
                format!("list_changed from mock {m}"),
                None,
            ),
        };
        acts.push((c.at, act, label));
        if let (Some(len), Some((undo, label))) = (c.for_, undo) {
            acts.push((c.at + len, undo, label));
        }
    }
    acts.sort_by_key(|a| a.0);
    acts
}

/// Run the chaos schedule from `start` until `stop` fires; give the mocks back with what happened.
pub async fn run_chaos(
    exe: PathBuf,
    dir: PathBuf,
    specs: Vec<ChaosSpec>,
    mut mocks: Vec<Mock>,
    start: Instant,
    mut stop: oneshot::Receiver<()>,
) -> (Vec<Mock>, Vec<ChaosEvent>) {
    let http = reqwest::Client::new();
    let mut events = Vec::new();
    for (at, act, label) in schedule(&specs, &mocks) {
        tokio::select! {
            _ = tokio::time::sleep_until((start + at).into()) => {}
            _ = &mut stop => break,
        }
        let result = match act {
            Act::Kill(i) => match mocks[i].proc.take() {
                Some(mut p) => p.child.kill().await.map_err(|e| e.to_string()),
                None => Err("already down".into()),
            },
            Act::Restart(i) => {
                let m = &mocks[i];
                match Mock::start(&exe, &m.name, m.config.clone(), &dir, m.addr).await {
                    Ok(new) => {
                        mocks[i].proc = new.proc;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Act::Control(i, c) => {
                let url = format!("http://{}/control", mocks[i].addr);
                let body = serde_json::to_string(&c).unwrap_or_default();
                let req = http.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
                match req.timeout(Duration::from_secs(5)).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("HTTP {}", r.status())),
                    Err(e) => Err(super::client::chain(&e)),
                }
            }
        };
        let what = match result {
            Ok(()) => label,
            Err(e) => format!("{label} failed: {e}"),
        };
        events.push(ChaosEvent { t_s: start.elapsed().as_secs_f64(), what });
    }
    (mocks, events)
}
