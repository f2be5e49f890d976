//! stdio child transport: one JSON-RPC message per line on stdin/stdout, stderr into the gateway log.
//!
//! The child gets a scrubbed environment (only configured variables plus PATH, HOME and LANG) and its own
//! process group, so shutdown can kill helpers it spawned (`npx` → `node`) along with it.

use crate::pipe::{sniff_id, Outgoing, Pipe, PipeEvent, PipeGuard, PIPE_DEPTH};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use portcullis_protocol::Message;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Variables a child inherits from the gateway; everything else must be configured explicitly.
pub const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG"];

pub struct StdioConfig {
    pub name: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub max_message: usize,
}

pub struct ChildGuard {
    child: Child,
    pgid: Option<i32>,
    name: String,
}

impl ChildGuard {
    /// Close stdin (already done when the writer ends), give the child a moment, then kill its group and reap.
    pub async fn shutdown(mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            self.kill_group(Signal::SIGKILL);
            return;
        }
        self.kill_group(Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_millis(1500), self.child.wait()).await.is_err() {
            tracing::warn!(upstream = %self.name, "child ignored SIGTERM; killing");
            self.kill_group(Signal::SIGKILL);
            let _ = self.child.wait().await;
        }
        // Grandchildren that outlived the leader still share the group.
        self.kill_group(Signal::SIGKILL);
    }

    fn kill_group(&self, sig: Signal) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(Pid::from_raw(pgid), sig);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Dropped without an orderly shutdown (panic, task abort): never leave the process tree behind.
        self.kill_group(Signal::SIGKILL);
    }
}

pub fn spawn(cfg: StdioConfig) -> std::io::Result<Pipe> {
    let mut cmd = Command::new(&cfg.command[0]);
    cmd.args(&cfg.command[1..])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    for k in INHERITED_ENV {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    cmd.envs(&cfg.env);
    if let Some(dir) = &cfg.cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn()?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let (stdin, stdout, stderr) = match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
        (Some(i), Some(o), Some(e)) => (i, o, e),
        _ => return Err(std::io::Error::other("child stdio pipes missing")),
    };
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(PIPE_DEPTH);
    let (ev_tx, ev_rx) = mpsc::channel::<PipeEvent>(PIPE_DEPTH);

    let name = cfg.name.clone();
    tokio::spawn(async move {
        let mut stdin = tokio::io::BufWriter::new(stdin);
        while let Some(first) = out_rx.recv().await {
            let mut line = first.msg.to_json();
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() {
                break;
            }
            // Batch whatever else is queued into one flush.
            while let Ok(next) = out_rx.try_recv() {
                let mut line = next.msg.to_json();
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
            if stdin.flush().await.is_err() {
                break;
            }
        }
        tracing::debug!(upstream = %name, "stdin closed");
    });

    let name = cfg.name.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "portcullis::upstream::stderr", upstream = %name, "{}", truncate(&line, 2000));
        }
    });

    let name = cfg.name.clone();
    let max = cfg.max_message;
    tokio::spawn(async move {
        let reason = read_lines(stdout, max, &name, &ev_tx).await;
        let _ = ev_tx.send(PipeEvent::Closed { reason }).await;
    });

    Ok(Pipe { tx: out_tx, rx: ev_rx, guard: PipeGuard::Child(Box::new(ChildGuard { child, pgid, name: cfg.name })) })
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Read newline-delimited messages without ever holding more than `max` bytes of one line. An oversized
/// line is skipped to its end; its id is sniffed from the first and last bytes so the caller fails fast.
async fn read_lines<R: AsyncRead + Unpin>(r: R, max: usize, name: &str, tx: &mpsc::Sender<PipeEvent>) -> String {
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut line: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut oversized = false;
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let buf = match r.fill_buf().await {
            Ok([]) => return "stdout closed (process exited)".into(),
            Ok(b) => b,
            Err(e) => return format!("stdout read failed: {e}"),
        };
        let (chunk, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        if oversized {
            tail.extend_from_slice(chunk);
            if tail.len() > 256 {
                tail.drain(..tail.len() - 256);
            }
        } else if line.len() + chunk.len() > max {
            oversized = true;
            line.truncate(256.min(line.len()));
            tail.extend_from_slice(&chunk[chunk.len().saturating_sub(256)..]);
        } else {
            line.extend_from_slice(chunk);
        }
        let used = chunk.len() + usize::from(found);
        r.consume(used);
        if !found {
            continue;
        }
        if oversized {
            let id = sniff_id(&line).or_else(|| sniff_id(&tail));
            tracing::warn!(upstream = %name, limit = max, ?id, "dropped upstream message larger than max_message");
            if tx.send(PipeEvent::TooLarge { id, limit: max }).await.is_err() {
                return "gateway closed".into();
            }
            oversized = false;
            tail.clear();
        } else if !line.iter().all(u8::is_ascii_whitespace) {
            match Message::parse(&line) {
                Ok(m) => {
                    if tx.send(PipeEvent::Message(m)).await.is_err() {
                        return "gateway closed".into();
                    }
                }
                Err(e) => {
                    let text = String::from_utf8_lossy(&line);
                    tracing::warn!(upstream = %name, error = %e, line = %truncate(&text, 200), "ignoring non-JSON-RPC line on upstream stdout");
                }
            }
        }
        line.clear();
        if line.capacity() > 1 << 20 {
            line.shrink_to(8 * 1024);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(input: &'static [u8], max: usize) -> Vec<PipeEvent> {
        let (tx, mut rx) = mpsc::channel(16);
        let reason = read_lines(input, max, "t", &tx).await;
        drop(tx);
        let mut out = Vec::new();
        while let Some(e) = rx.recv().await {
            out.push(e);
        }
        out.push(PipeEvent::Closed { reason });
        out
    }

    #[tokio::test]
    async fn skips_garbage_and_bounds_lines() {
        let big = br#"{"jsonrpc":"2.0","id":7,"result":{"text":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#;
        let input: &'static [u8] = Box::leak(
            [&b"garbage {{{\n"[..], &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n"[..], big, b"\n", b"\n"]
                .concat()
                .into_boxed_slice(),
        );
        let evs = run(input, 64).await;
        assert!(matches!(&evs[0], PipeEvent::Message(m) if m.id() == Some(&portcullis_protocol::Id::Num(1))));
        assert!(matches!(&evs[1], PipeEvent::TooLarge { id: Some(portcullis_protocol::Id::Num(7)), limit: 64 }));
        assert!(matches!(&evs[2], PipeEvent::Closed { .. }));
    }
}
