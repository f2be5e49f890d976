//! Downstream stdio: the gateway is the MCP server a desktop app launches (`portcullis stdio`). One client,
//! one session; stdout carries only JSON-RPC (logs go to stderr).

use crate::session::Output;
use crate::Gateway;
use portcullis_protocol::Message;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Serve one client over a reader/writer pair until the reader ends; then end the session.
/// `principal` is who the local user is (stdio has no tokens; `portcullis stdio --as SUBJECT`).
pub async fn serve<R, W>(
    gw: Arc<Gateway>,
    topic: Option<String>,
    principal: Arc<portcullis_auth::Principal>,
    input: R,
    output: W,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let Some(s) = gw.new_session(topic.as_deref(), Output::Channel(tx), principal) else {
        return Err(std::io::Error::other("session limit reached"));
    };
    let writer = tokio::spawn(async move {
        let mut out = tokio::io::BufWriter::new(output);
        while let Some(line) = rx.recv().await {
            if out.write_all(line.as_bytes()).await.is_err() || out.write_all(b"\n").await.is_err() {
                break;
            }
            while let Ok(more) = rx.try_recv() {
                if out.write_all(more.as_bytes()).await.is_err() || out.write_all(b"\n").await.is_err() {
                    return;
                }
            }
            if out.flush().await.is_err() {
                break;
            }
        }
    });
    let max = gw.cfg.server.max_body;
    let mut lines = BufReader::new(input);
    let mut buf = Vec::with_capacity(8192);
    loop {
        buf.clear();
        // Bounded read: a line longer than max_body is rejected without buffering the rest of it.
        let n = read_line_bounded(&mut lines, &mut buf, max).await?;
        match n {
            LineRead::Eof => break,
            LineRead::TooLong => {
                let e = portcullis_protocol::ErrorObject::new(
                    portcullis_protocol::code::INVALID_REQUEST,
                    format!("message exceeds the {max}-byte limit (server.max_body)"),
                );
                s.send_unrelated(&Message::error(None, &e));
            }
            LineRead::Line if buf.iter().all(u8::is_ascii_whitespace) => {}
            LineRead::Line => match Message::parse(&buf) {
                Ok(m) => crate::channel::on_message(&gw, &s, m).await,
                Err(e) => crate::channel::parse_error(&s, &e),
            },
        }
    }
    gw.end_session(&s.id).await;
    drop(s);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    Ok(())
}

enum LineRead {
    Line,
    TooLong,
    Eof,
}

async fn read_line_bounded<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    out: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    let mut too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if out.is_empty() && !too_long {
                LineRead::Eof
            } else if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
        let (chunk, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        if !too_long {
            if out.len() + chunk.len() > max {
                too_long = true;
                out.clear();
            } else {
                out.extend_from_slice(chunk);
            }
        }
        let used = chunk.len() + usize::from(found);
        r.consume(used);
        if found {
            return Ok(if too_long { LineRead::TooLong } else { LineRead::Line });
        }
    }
}
