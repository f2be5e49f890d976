//! Legacy HTTP+SSE client transport against a real HTTP server on 127.0.0.1:0 (axum): `GET /sse` sends the
//! `endpoint` event and then every server message; client messages are POSTed to the endpoint.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream;
use portcullis_protocol::raw::raw;
use portcullis_protocol::{Id, Message};
use portcullis_upstream::pipe::{Outgoing, Pipe, PipeEvent};
use portcullis_upstream::sse_client::{connect, SseConfig};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// One POST to the endpoint: query, headers, body.
type Post = (HashMap<String, String>, HeaderMap, Value);

#[derive(Clone)]
struct Legacy {
    /// First event of the GET stream.
    endpoint: String,
    /// Feeds the open GET stream; `None` once it is taken.
    stream: Arc<Mutex<Option<mpsc::UnboundedReceiver<String>>>>,
    push: mpsc::UnboundedSender<String>,
    posts: Arc<Mutex<Vec<Post>>>,
}

async fn sse(State(st): State<Legacy>) -> Response {
    let Some(mut rx) = st.stream.lock().unwrap().take() else { return StatusCode::CONFLICT.into_response() };
    let first = format!(": hello\n\nevent: endpoint\ndata: {}\n\n", st.endpoint);
    let _ = st.push.send(first);
    let body = stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|s| s.filter(|s| s != CLOSE).map(|s| Ok::<_, Infallible>(Bytes::from(s))))
    });
    ([(axum::http::header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(body)).into_response()
}

/// Ends the GET stream when pushed.
const CLOSE: &str = "\u{0}close";

/// Requests are answered on the GET stream; `fail` answers HTTP 500; `close` ends the GET stream.
async fn message(
    State(st): State<Legacy>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let msg: Value = serde_json::from_slice(&body).unwrap();
    st.posts.lock().unwrap().push((q, headers, msg.clone()));
    match (msg["method"].as_str(), msg.get("id")) {
        (Some("fail"), _) => return (StatusCode::INTERNAL_SERVER_ERROR, "nope").into_response(),
        (Some("close"), _) => {
            let _ = st.push.send(CLOSE.into());
        }
        (Some("huge"), Some(id)) => {
            let big = json!({"jsonrpc": "2.0", "id": id, "result": {"text": "x".repeat(200_000)}});
            let _ = st.push.send(format!("event: message\ndata: {big}\n\n"));
            let after = json!({"jsonrpc": "2.0", "method": "notifications/after"});
            let _ = st.push.send(format!("data: {after}\n\n"));
        }
        (Some(method), Some(id)) => {
            let reply = json!({"jsonrpc": "2.0", "id": id, "result": {"method": method}});
            let _ = st.push.send(format!("event: message\ndata: {reply}\n\n"));
        }
        _ => {}
    }
    StatusCode::ACCEPTED.into_response()
}

/// Serve `/sse` and `/message`; `endpoint` gets the server's base URL and returns the `endpoint` event's data.
async fn start(endpoint: impl FnOnce(&str) -> String) -> (String, Legacy) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (push, rx) = mpsc::unbounded_channel();
    let st = Legacy { endpoint: endpoint(&base), stream: Arc::new(Mutex::new(Some(rx))), push, posts: Arc::default() };
    let app = axum::Router::new()
        .route("/sse", axum::routing::get(sse))
        .route("/message", axum::routing::post(message))
        .with_state(st.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("{base}/sse"), st)
}

fn cfg(url: &str, connect_timeout: Duration) -> SseConfig {
    SseConfig { url: url.into(), max_message: 64 * 1024, connect_timeout, name: "legacy".into() }
}

async fn open(url: &str) -> Pipe {
    connect(cfg(url, Duration::from_secs(5)), reqwest::Client::new()).await.unwrap()
}

fn request(id: i64, method: &str) -> Outgoing {
    Message::request(Id::Num(id), method, Some(raw("{}"))).into()
}

async fn next(p: &mut Pipe) -> PipeEvent {
    tokio::time::timeout(Duration::from_secs(10), p.rx.recv()).await.expect("no pipe event in 10s").expect("pipe ended")
}

async fn next_msg(p: &mut Pipe) -> Value {
    match next(p).await {
        PipeEvent::Message(m) => serde_json::from_str(&m.to_json()).unwrap(),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn endpoint_handshake_then_messages_flow() {
    let (url, st) = start(|_| "/message?sessionId=abc".into()).await;
    let mut p = open(&url).await;
    let mut out = request(1, "tools/list");
    out.headers.push(("x-trace".parse().unwrap(), "t1".parse().unwrap()));
    p.tx.send(out).await.unwrap();
    p.tx.send(Message::notification("notifications/initialized", None).into()).await.unwrap();
    assert_eq!(next_msg(&mut p).await, json!({"jsonrpc": "2.0", "id": 1, "result": {"method": "tools/list"}}));

    let posts = st.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 2);
    let (query, headers, _) = posts.iter().find(|(_, _, m)| m["id"] == 1).unwrap();
    assert_eq!(query.get("sessionId").map(String::as_str), Some("abc"));
    assert_eq!(headers.get("x-trace").unwrap(), "t1");
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
}

#[tokio::test]
async fn endpoint_must_stay_on_the_same_origin() {
    let (url, st) = start(|base| format!("{base}/message?sessionId=abs")).await;
    let mut p = open(&url).await;
    p.tx.send(request(2, "ping")).await.unwrap();
    assert_eq!(next_msg(&mut p).await["id"], 2);
    assert_eq!(st.posts.lock().unwrap()[0].0.get("sessionId").map(String::as_str), Some("abs"));

    let (url, _st) = start(|_| "http://localhost:9/message".into()).await;
    let err = connect(cfg(&url, Duration::from_secs(5)), reqwest::Client::new()).await.err().unwrap();
    assert_eq!(
        err,
        "upstream \"legacy\" sent an endpoint on another origin (http://localhost:9); refusing to post there; \
         check its url in portcullis.toml"
    );
}

#[tokio::test]
async fn missing_endpoint_times_out() {
    let (url, st) = start(|_| "message".into()).await;
    st.stream.lock().unwrap().take();
    // `/sse` now answers 409 at once; a stream that never sends `endpoint` must time out instead.
    let err = connect(cfg(&url, Duration::from_secs(5)), reqwest::Client::new()).await.err().unwrap();
    assert!(err.starts_with("upstream \"legacy\" answered HTTP 409"), "{err}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = format!("http://{}/sse", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/sse",
        axum::routing::get(|| async {
            let body = Body::from_stream(stream::pending::<Result<Bytes, Infallible>>());
            ([(axum::http::header::CONTENT_TYPE, "text/event-stream")], body)
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let err = connect(cfg(&silent, Duration::from_millis(300)), reqwest::Client::new()).await.err().unwrap();
    assert!(err.starts_with("upstream \"legacy\" sent no endpoint event within 0.3s"), "{err}");
}

#[tokio::test]
async fn failed_post_answers_the_request() {
    let (url, _st) = start(|_| "message".into()).await;
    let mut p = open(&url).await;
    p.tx.send(request(4, "fail")).await.unwrap();
    let err = next_msg(&mut p).await;
    assert_eq!(err["id"], 4);
    assert_eq!(err["error"]["code"], -32014);
    assert_eq!(err["error"]["message"], "upstream \"legacy\" answered HTTP 500: nope");
}

#[tokio::test]
async fn oversized_event_is_skipped_with_its_id() {
    let (url, _st) = start(|_| "message".into()).await;
    let mut p = open(&url).await;
    p.tx.send(request(9, "huge")).await.unwrap();
    match next(&mut p).await {
        PipeEvent::TooLarge { id, limit } => assert_eq!((id, limit), (Some(Id::Num(9)), 64 * 1024)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The stream survives: the next event arrives.
    assert_eq!(next_msg(&mut p).await["method"], "notifications/after");
    p.tx.send(request(10, "ping")).await.unwrap();
    assert_eq!(next_msg(&mut p).await["id"], 10);
}

#[tokio::test]
async fn stream_end_closes_the_pipe() {
    let (url, _st) = start(|_| "message".into()).await;
    let mut p = open(&url).await;
    p.tx.send(Message::notification("close", None).into()).await.unwrap();
    match next(&mut p).await {
        PipeEvent::Closed { reason } => assert_eq!(reason, "upstream \"legacy\" closed its SSE stream"),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(p.rx.recv().await.is_none());
}

/// The real TS SDK legacy server (`server-everything sse`), when `tests/peers` is installed.
#[tokio::test]
async fn server_everything_sse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin = root.join("tests/peers/node_modules/.bin/mcp-server-everything");
    if !bin.exists() {
        eprintln!("skipping: run scripts/test-deps.sh for tests/peers");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = tokio::process::Command::new("node")
        .arg(bin)
        .arg("sse")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/sse");
    let mut p = None;
    for _ in 0..100 {
        if let Ok(pipe) = connect(cfg(&url, Duration::from_secs(5)), reqwest::Client::new()).await {
            p = Some(pipe);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut p = p.expect("server-everything did not start");
    let init =
        json!({"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}});
    p.tx.send(Message::request(Id::Num(0), "initialize", Some(raw(&init.to_string()))).into()).await.unwrap();
    assert_eq!(next_msg(&mut p).await["result"]["protocolVersion"], "2024-11-05");
    p.tx.send(Message::notification("notifications/initialized", None).into()).await.unwrap();
    let call = json!({"name": "echo", "arguments": {"message": "hi"}});
    p.tx.send(Message::request(Id::Num(1), "tools/call", Some(raw(&call.to_string()))).into()).await.unwrap();
    let reply = loop {
        let m = next_msg(&mut p).await;
        if m["id"] == 1 {
            break m;
        }
    };
    assert_eq!(reply["result"]["content"][0]["text"], "Echo: hi", "{reply}");
    drop(p);
    child.kill().await.unwrap();
}
