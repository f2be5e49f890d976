//! Streamable HTTP client transport against real HTTP servers on 127.0.0.1:0 (axum), plus the Python MCPServer
//! fixture when `.venv` is installed (`scripts/test-deps.sh`).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, StreamExt};
use portcullis_protocol::raw::raw;
use portcullis_protocol::{Id, Message};
use portcullis_upstream::http::{connect, HttpConfig};
use portcullis_upstream::pipe::{Outgoing, Pipe, PipeEvent};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
struct Req {
    method: Method,
    headers: HeaderMap,
    body: Value,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn rpc_method(&self) -> &str {
        self.body["method"].as_str().unwrap_or_default()
    }
}

struct Server {
    url: String,
    log: Arc<Mutex<Vec<Req>>>,
}

impl Server {
    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
}

/// Serve `/mcp` with `f`, recording every request.
async fn serve<F, Fut>(f: F) -> Server
where
    F: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let log = Arc::new(Mutex::new(Vec::new()));
    let rec = log.clone();
    let handler = move |method: Method, headers: HeaderMap, body: Bytes| {
        let req = Req { method, headers, body: serde_json::from_slice(&body).unwrap_or(Value::Null) };
        rec.lock().unwrap().push(req.clone());
        f(req)
    };
    let app = axum::Router::new().route("/mcp", axum::routing::any(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { url, log }
}

fn pipe(url: &str, max_message: usize) -> Pipe {
    let cfg = HttpConfig { url: url.into(), max_message, connect_timeout: Duration::from_secs(5), name: "t".into() };
    connect(cfg, reqwest::Client::new())
}

fn request(id: i64, method: &str, params: Value) -> Outgoing {
    Message::request(Id::Num(id), method, Some(raw(&params.to_string()))).into()
}

fn notification(method: &str) -> Outgoing {
    Message::notification(method, None).into()
}

fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn json_reply(v: Value) -> Response {
    axum::Json(v).into_response()
}

fn sse_reply(body: impl Into<Body>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/event-stream")], body.into()).into_response()
}

/// JSON reply for requests, 202 for everything else, 405 for GET.
async fn echo(req: Req) -> Response {
    match (req.method, req.body.get("id")) {
        (Method::GET, _) => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        (_, Some(id)) => json_reply(result(id, json!({"method": req.body["method"]}))),
        _ => StatusCode::ACCEPTED.into_response(),
    }
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

async fn quiet(p: &mut Pipe) {
    if let Ok(ev) = tokio::time::timeout(Duration::from_millis(300), p.rx.recv()).await {
        panic!("unexpected event {ev:?}");
    }
}

#[tokio::test]
async fn json_reply_with_headers() {
    let srv = serve(echo).await;
    let mut p = pipe(&srv.url, 1 << 20);
    p.tx.send(notification("notifications/cancelled")).await.unwrap();
    let mut out = request(1, "tools/list", json!({}));
    out.headers.push(("x-trace".parse().unwrap(), "t1".parse().unwrap()));
    p.tx.send(out).await.unwrap();
    assert_eq!(next_msg(&mut p).await, result(&json!(1), json!({"method": "tools/list"})));
    quiet(&mut p).await;
    let reqs = srv.requests();
    let list = reqs.iter().find(|r| r.rpc_method() == "tools/list").unwrap();
    assert_eq!(list.header("content-type"), Some("application/json"));
    assert_eq!(list.header("accept"), Some("application/json, text/event-stream"));
    assert_eq!(list.header("x-trace"), Some("t1"));
    assert_eq!(list.header("mcp-session-id"), None);
}

#[tokio::test]
async fn sse_reply_skips_priming_and_relays_related_messages() {
    let srv = serve(|req: Req| async move {
        let id = req.body["id"].clone();
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}});
        sse_reply(format!(
            ": keep-alive\nid: p0\ndata:\n\nevent: message\nid: p1\ndata: {progress}\n\nid: p2\ndata: {}\n\n",
            result(&id, json!({"ok": true}))
        ))
    })
    .await;
    let mut p = pipe(&srv.url, 1 << 20);
    p.tx.send(request(5, "tools/call", json!({"name": "x"}))).await.unwrap();
    assert_eq!(next_msg(&mut p).await["method"], "notifications/progress");
    assert_eq!(next_msg(&mut p).await, result(&json!(5), json!({"ok": true})));
    quiet(&mut p).await;
}

/// initialize → session id + protocol version on later requests; GET opens after `initialized`; 405 is final;
/// a second initialize forgets the old session.
#[tokio::test]
async fn session_follows_initialize() {
    let sessions = Arc::new(AtomicUsize::new(0));
    let srv = serve(move |req: Req| {
        let sessions = sessions.clone();
        async move {
            if req.rpc_method() == "initialize" {
                let n = sessions.fetch_add(1, Ordering::SeqCst) + 1;
                let body = result(&req.body["id"], json!({"protocolVersion": "2025-06-18", "capabilities": {}}));
                return ([("mcp-session-id", format!("s-{n}"))], axum::Json(body)).into_response();
            }
            echo(req).await
        }
    })
    .await;
    let mut p = pipe(&srv.url, 1 << 20);
    p.tx.send(request(0, "initialize", json!({"protocolVersion": "2025-11-25"}))).await.unwrap();
    assert_eq!(next_msg(&mut p).await["result"]["protocolVersion"], "2025-06-18");
    p.tx.send(notification("notifications/initialized")).await.unwrap();
    p.tx.send(request(1, "tools/list", json!({}))).await.unwrap();
    assert_eq!(next_msg(&mut p).await["id"], 1);
    quiet(&mut p).await;

    let reqs = srv.requests();
    assert_eq!(reqs[0].header("mcp-session-id"), None);
    assert_eq!(reqs[0].header("mcp-protocol-version"), None);
    for r in &reqs[1..] {
        assert_eq!(r.header("mcp-session-id"), Some("s-1"), "{r:?}");
        assert_eq!(r.header("mcp-protocol-version"), Some("2025-06-18"), "{r:?}");
    }
    let gets: Vec<_> = reqs.iter().filter(|r| r.method == Method::GET).collect();
    assert_eq!(gets.len(), 1, "405 must not be retried");
    assert_eq!(gets[0].header("accept"), Some("text/event-stream"));

    p.tx.send(request(2, "initialize", json!({}))).await.unwrap();
    next_msg(&mut p).await;
    p.tx.send(request(3, "ping", json!({}))).await.unwrap();
    next_msg(&mut p).await;
    let reqs = srv.requests();
    let n = reqs.len();
    assert_eq!(reqs[n - 2].header("mcp-session-id"), None, "a new initialize forgets the old session");
    assert_eq!(reqs[n - 1].header("mcp-session-id"), Some("s-2"));
}

#[tokio::test]
async fn standalone_stream_resumes_with_last_event_id() {
    let gets = Arc::new(AtomicUsize::new(0));
    let srv = serve(move |req: Req| {
        let gets = gets.clone();
        async move {
            if req.method != Method::GET {
                return echo(req).await;
            }
            let note = |n: u32| json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": n}});
            match gets.fetch_add(1, Ordering::SeqCst) {
                // First stream: priming event with a short retry, one message, then the server closes it.
                0 => sse_reply(format!("id: e0\nretry: 50\ndata:\n\nid: e1\ndata: {}\n\n", note(1))),
                _ => {
                    let resumed = req.header("last-event-id").unwrap_or("none").to_owned();
                    let first = Ok::<_, Infallible>(Bytes::from(format!("id: e2\ndata: {}\n\n", note(2))));
                    let note3 = json!({"jsonrpc": "2.0", "method": "resumed", "params": {"from": resumed}});
                    let second = Ok(Bytes::from(format!("data: {note3}\n\n")));
                    sse_reply(Body::from_stream(stream::iter([first, second]).chain(stream::pending())))
                }
            }
        }
    })
    .await;
    let mut p = pipe(&srv.url, 1 << 20);
    p.tx.send(notification("notifications/initialized")).await.unwrap();
    assert_eq!(next_msg(&mut p).await["params"]["n"], 1);
    assert_eq!(next_msg(&mut p).await["params"]["n"], 2);
    assert_eq!(next_msg(&mut p).await["params"]["from"], "e1");
    quiet(&mut p).await;
}

#[tokio::test]
async fn not_found_expires_the_session_once_per_session() {
    let srv = serve(|req: Req| async move {
        match req.rpc_method() {
            "initialize" => {
                let body = result(&req.body["id"], json!({"protocolVersion": "2025-11-25"}));
                ([("mcp-session-id", "abc")], axum::Json(body)).into_response()
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    })
    .await;
    let mut p = pipe(&srv.url, 1 << 20);
    // Without a session id a 404 is an ordinary failure.
    p.tx.send(request(1, "tools/list", json!({}))).await.unwrap();
    let err = next_msg(&mut p).await;
    assert_eq!((err["id"].clone(), err["error"]["code"].clone()), (json!(1), json!(-32014)));

    for round in 0..2 {
        p.tx.send(request(10 * round, "initialize", json!({}))).await.unwrap();
        next_msg(&mut p).await;
        p.tx.send(request(10 * round + 1, "tools/list", json!({}))).await.unwrap();
        p.tx.send(request(10 * round + 2, "tools/call", json!({}))).await.unwrap();
        assert!(matches!(next(&mut p).await, PipeEvent::SessionExpired));
        quiet(&mut p).await; // neither request is answered, and the expiry is reported once
    }
}

#[tokio::test]
async fn http_errors_become_upstream_unavailable() {
    let srv = serve(|req: Req| async move {
        match req.rpc_method() {
            "bad/json" => ([(axum::http::header::CONTENT_TYPE, "application/json")], "not json").into_response(),
            "accepted" => StatusCode::ACCEPTED.into_response(),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "boom\n  at line 3").into_response(),
        }
    })
    .await;
    let mut p = pipe(&srv.url, 1 << 20);
    p.tx.send(notification("notifications/progress")).await.unwrap(); // logged only
    p.tx.send(request(7, "tools/call", json!({}))).await.unwrap();
    let err = next_msg(&mut p).await;
    assert_eq!(err["id"], 7);
    assert_eq!(err["error"]["code"], -32014);
    assert_eq!(err["error"]["message"], "upstream \"t\" answered HTTP 500: boom at line 3");

    p.tx.send(request(8, "bad/json", json!({}))).await.unwrap();
    let err = next_msg(&mut p).await;
    assert_eq!((err["id"].clone(), err["error"]["code"].clone()), (json!(8), json!(-32014)));
    assert!(err["error"]["message"].as_str().unwrap().contains("sent invalid JSON"), "{err}");

    p.tx.send(request(9, "accepted", json!({}))).await.unwrap();
    let err = next_msg(&mut p).await;
    assert_eq!(err["error"]["message"], "upstream \"t\" answered HTTP 202 without a response");
    quiet(&mut p).await;
}

#[tokio::test]
async fn unreachable_upstream_fails_the_request() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    drop(listener);
    let mut p = pipe(&url, 1 << 20);
    p.tx.send(request(3, "ping", json!({}))).await.unwrap();
    let err = next_msg(&mut p).await;
    assert_eq!((err["id"].clone(), err["error"]["code"].clone()), (json!(3), json!(-32014)));
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("upstream \"t\" could not be reached: "), "{msg}");
    assert!(!msg.contains(&url), "no URL in the message: {msg}");
}

/// Endless bodies: if the transport buffered a reply whole, these tests would never finish.
fn endless(head: String) -> Body {
    let head = stream::once(async move { Ok::<_, Infallible>(Bytes::from(head)) });
    Body::from_stream(head.chain(stream::repeat_with(|| Ok(Bytes::from(vec![b'a'; 64 * 1024])))))
}

#[tokio::test]
async fn oversized_replies_are_cut_off_at_the_limit() {
    let srv = serve(|req: Req| async move {
        let id = &req.body["id"];
        let head = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"text":""#);
        match req.rpc_method() {
            "json/endless" => ([(axum::http::header::CONTENT_TYPE, "application/json")], endless(head)).into_response(),
            "json/sized" => json_reply(result(id, json!({"text": "a".repeat(2 << 20)}))),
            _ => sse_reply(endless(format!("id: 1\ndata:\n\ndata: {head}"))),
        }
    })
    .await;
    let limit = 1 << 20;
    let mut p = pipe(&srv.url, limit);
    for (id, method) in [(1, "json/endless"), (2, "json/sized"), (3, "sse/endless")] {
        p.tx.send(request(id, method, json!({}))).await.unwrap();
        match next(&mut p).await {
            PipeEvent::TooLarge { id: got, limit: l } => assert_eq!((got, l), (Some(Id::Num(id)), limit), "{method}"),
            other => panic!("{method}: expected TooLarge, got {other:?}"),
        }
    }
    quiet(&mut p).await;
}

#[tokio::test]
async fn posts_are_concurrent() {
    let second_arrived = Arc::new(tokio::sync::Notify::new());
    let srv = serve(move |req: Req| {
        let second_arrived = second_arrived.clone();
        async move {
            match req.rpc_method() {
                "slow" => second_arrived.notified().await,
                _ => second_arrived.notify_one(),
            }
            echo(req).await
        }
    })
    .await;
    let mut p = pipe(&srv.url, 1 << 20);
    p.tx.send(request(1, "slow", json!({}))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    p.tx.send(request(2, "fast", json!({}))).await.unwrap();
    assert_eq!(next_msg(&mut p).await["id"], 2);
    assert_eq!(next_msg(&mut p).await["id"], 1);
}

#[tokio::test]
async fn closing_tx_deletes_the_session() {
    let srv = serve(|req: Req| async move {
        match (&req.method, req.rpc_method()) {
            (&Method::DELETE, _) => StatusCode::OK.into_response(),
            (_, "initialize") => {
                let body = result(&req.body["id"], json!({"protocolVersion": "2025-11-25"}));
                ([("mcp-session-id", "gone-soon")], axum::Json(body)).into_response()
            }
            _ => echo(req).await,
        }
    })
    .await;
    let Pipe { tx, mut rx, guard } = pipe(&srv.url, 1 << 20);
    tx.send(request(0, "initialize", json!({}))).await.unwrap();
    assert!(matches!(rx.recv().await, Some(PipeEvent::Message(_))));
    drop(tx);
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap();
    assert!(matches!(ev, Some(PipeEvent::Closed { .. })), "{ev:?}");
    assert!(rx.recv().await.is_none(), "nothing follows Closed");
    let delete = srv.requests().into_iter().find(|r| r.method == Method::DELETE).expect("DELETE sent");
    assert_eq!(delete.header("mcp-session-id"), Some("gone-soon"));
    assert_eq!(delete.header("mcp-protocol-version"), Some("2025-11-25"));
    drop(guard);
}

async fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing listens on port {port} after 10s");
}

/// The real Python MCPServer (SSE replies with priming events, sessions, GET stream, DELETE).
#[tokio::test]
async fn python_mcp_server() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (python, script) = (root.join(".venv/bin/python"), root.join("tests/fixtures/py_http_server.py"));
    if !python.exists() || !script.exists() {
        eprintln!("skipping: run scripts/test-deps.sh for the Python fixture");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .args(["--port", &port.to_string()])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_port(port).await;

    let mut p = pipe(&format!("http://127.0.0.1:{port}/mcp"), 1 << 20);
    let init =
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}});
    p.tx.send(request(0, "initialize", init)).await.unwrap();
    assert_eq!(next_msg(&mut p).await["result"]["protocolVersion"], "2025-11-25");
    p.tx.send(notification("notifications/initialized")).await.unwrap();
    let call = json!({"name": "slow_count", "arguments": {"n": 2}, "_meta": {"progressToken": "pt"}});
    p.tx.send(request(1, "tools/call", call)).await.unwrap();
    let mut progress = 0;
    let reply = loop {
        let m = next_msg(&mut p).await;
        if m["method"] == "notifications/progress" {
            progress += 1;
        } else if m["id"] == 1 {
            break m;
        }
    };
    assert_eq!(progress, 2, "{reply}");
    assert_eq!(reply["result"]["content"][0]["text"], "counted 2", "{reply}");
    p.tx.send(request(2, "tools/call", json!({"name": "add", "arguments": {"a": 2, "b": 3}}))).await.unwrap();
    assert_eq!(next_msg(&mut p).await["result"]["content"][0]["text"], "5");
    p.tx.send(request(3, "tools/call", json!({"name": "whoami", "arguments": {}}))).await.unwrap();
    let seen = next_msg(&mut p).await;
    let seen: Value = serde_json::from_str(seen["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(seen["mcp-protocol-version"], "2025-11-25", "{seen}");
    assert!(seen["mcp-session-id"].is_string(), "{seen}");
    let Pipe { tx, mut rx, guard: _guard } = p;
    drop(tx);
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        if let PipeEvent::Closed { .. } = ev {
            break;
        }
    }
    child.kill().await.unwrap();
}

/// The real TS SDK server (`server-everything streamableHttp`: SSE replies, sessions), when `tests/peers` is
/// installed.
#[tokio::test]
async fn server_everything_streamable_http() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin = root.join("tests/peers/node_modules/.bin/mcp-server-everything");
    if !bin.exists() {
        eprintln!("skipping: run scripts/test-deps.sh for tests/peers");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = tokio::process::Command::new("node")
        .arg(bin)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_port(port).await;

    let mut p = pipe(&format!("http://127.0.0.1:{port}/mcp"), 1 << 20);
    let init =
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}});
    p.tx.send(request(0, "initialize", init)).await.unwrap();
    assert_eq!(next_msg(&mut p).await["result"]["protocolVersion"], "2025-11-25");
    p.tx.send(notification("notifications/initialized")).await.unwrap();
    p.tx.send(request(1, "tools/call", json!({"name": "echo", "arguments": {"message": "hi"}}))).await.unwrap();
    let reply = loop {
        let m = next_msg(&mut p).await;
        if m["id"] == 1 {
            break m;
        }
    };
    assert_eq!(reply["result"]["content"][0]["text"], "Echo: hi", "{reply}");
    let Pipe { tx, mut rx, guard: _guard } = p;
    drop(tx);
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        if let PipeEvent::Closed { .. } = ev {
            break;
        }
    }
    child.kill().await.unwrap();
}
