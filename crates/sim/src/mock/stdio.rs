//! stdio front-end: one JSON-RPC message per line on stdin, replies and notifications on stdout. Each request
//! runs in its own task, so a slow call does not hold up the calls behind it; replies go out in completion order.
//! A crash exits the process with status [`CRASH_EXIT`](super::CRASH_EXIT) at once, calls in flight unanswered.

use super::{Mock, MockConfig, MockSpec, Plan, Step};
use portcullis_protocol::{ErrorObject, Message};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Replies waiting for the writer; a full queue slows the reader down.
const OUT_QUEUE: usize = 1024;

/// How a stdio session ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// stdin closed and the calls in flight were answered.
    Eof,
    /// A call drew a crash.
    Crash,
}

/// Serve stdin/stdout until stdin closes, then finish the calls in flight and return.
pub async fn serve_stdio(cfg: MockConfig) -> std::io::Result<()> {
    serve_stdio_spec(cfg.into()).await
}

/// [`serve_stdio`] for a full spec; a crash exits the process.
pub async fn serve_stdio_spec(spec: MockSpec) -> std::io::Result<()> {
    if serve(spec, tokio::io::stdin(), tokio::io::stdout()).await? == End::Crash {
        eprintln!("portcullis mock-server: crashing on purpose (crash_rate)");
        std::process::exit(super::CRASH_EXIT);
    }
    Ok(())
}

pub(crate) async fn serve<R, W>(spec: MockSpec, input: R, output: W) -> std::io::Result<End>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mock = Arc::new(Mock::from_spec(spec));
    let schedule = mock.spawn_schedule();
    let (tx, rx) = mpsc::channel::<String>(OUT_QUEUE);
    let writer = tokio::spawn(write_lines(rx, output));
    let mut calls = JoinSet::new();
    let mut changes = mock.subscribe();
    let note_tx = tx.clone();
    calls.spawn(async move {
        let note = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
        while !matches!(changes.recv().await, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
            if note_tx.send(note.to_owned()).await.is_err() {
                return;
            }
        }
    });
    let mut lines = BufReader::new(input).lines();
    let end = loop {
        let Some(line) = lines.next_line().await? else { break End::Eof };
        while calls.try_join_next().is_some() {}
        if line.trim().is_empty() {
            continue;
        }
        let msg = match Message::parse(line.as_bytes()) {
            Ok(m) => m,
            Err(e) => {
                let reply = Message::error(None, &ErrorObject::new(e.code(), e.to_string()));
                if tx.send(reply.to_json()).await.is_err() {
                    break End::Eof;
                }
                continue;
            }
        };
        match mock.plan(msg) {
            Plan::Nothing | Plan::Hang => {}
            Plan::Crash | Plan::Drop => break End::Crash,
            Plan::Reply(m) => {
                if tx.send(m.to_json()).await.is_err() {
                    break End::Eof;
                }
            }
            Plan::Call(c) => {
                let tx = tx.clone();
                calls.spawn(async move {
                    let (stx, mut srx) = mpsc::channel(4);
                    let run = async move { c.run(&stx).await };
                    let forward = async {
                        while let Some(step) = srx.recv().await {
                            match step {
                                Step::Note(m) | Step::Reply(m) => {
                                    if tx.send(m.to_json()).await.is_err() {
                                        return;
                                    }
                                }
                                Step::Tick => {}
                            }
                        }
                    };
                    tokio::join!(run, forward);
                });
            }
        }
    };
    if let Some(s) = schedule {
        s.abort();
    }
    if end == End::Crash {
        return Ok(End::Crash);
    }
    // The list_changed forwarder runs as long as the mock lives; stop it, then let the calls finish.
    drop(mock);
    while calls.join_next().await.is_some() {}
    drop(tx);
    writer.await.unwrap_or(Ok(()))?;
    Ok(End::Eof)
}

async fn write_lines<W: tokio::io::AsyncWrite + Unpin>(mut rx: mpsc::Receiver<String>, out: W) -> std::io::Result<()> {
    let mut out = BufWriter::new(out);
    while let Some(line) = rx.recv().await {
        out.write_all(line.as_bytes()).await?;
        out.write_all(b"\n").await?;
        // Flush once the queue is drained: under load, many replies share one write.
        if rx.is_empty() {
            out.flush().await?;
        }
    }
    out.flush().await
}
