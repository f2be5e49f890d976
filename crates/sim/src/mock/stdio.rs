//! stdio front-end: one JSON-RPC message per line on stdin, replies on stdout. Each request runs in its own task,
//! so a slow `work` call does not hold up the calls behind it; replies go out in completion order.

use super::{Mock, MockConfig};
use portcullis_protocol::{ErrorObject, Message};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Replies waiting for the writer; a full queue slows the reader down.
const OUT_QUEUE: usize = 1024;

/// Serve stdin/stdout until stdin closes, then finish the calls in flight and return.
pub async fn serve_stdio(cfg: MockConfig) -> std::io::Result<()> {
    serve(cfg, tokio::io::stdin(), tokio::io::stdout()).await
}

pub(crate) async fn serve<R, W>(cfg: MockConfig, input: R, output: W) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mock = Arc::new(Mock::new(cfg));
    let (tx, rx) = mpsc::channel::<String>(OUT_QUEUE);
    let writer = tokio::spawn(write_lines(rx, output));
    let mut lines = BufReader::new(input).lines();
    let mut calls = JoinSet::new();
    while let Some(line) = lines.next_line().await? {
        while calls.try_join_next().is_some() {}
        if line.trim().is_empty() {
            continue;
        }
        let msg = match Message::parse(line.as_bytes()) {
            Ok(m) => m,
            Err(e) => {
                let reply = Message::error(None, &ErrorObject::new(e.code(), e.to_string()));
                if tx.send(reply.to_json()).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let (mock, tx) = (mock.clone(), tx.clone());
        calls.spawn(async move {
            if let Some(reply) = mock.handle(msg).await {
                let _ = tx.send(reply.to_json()).await;
            }
        });
    }
    while calls.join_next().await.is_some() {}
    drop(tx);
    writer.await.unwrap_or(Ok(()))
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
