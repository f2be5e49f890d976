//! HTTP upstreams: a Streamable HTTP server that restarts (new session → 404 for ours) is re-initialized, and a
//! legacy HTTP+SSE server works through the gateway.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn py_server(port: u16) -> Killed {
    let c = Command::new(python())
        .current_dir(repo_root())
        .args(["tests/fixtures/py_http_server.py", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    Killed(c)
}

#[tokio::test]
async fn restarted_http_upstream_is_reinitialized() {
    let port = free_port();
    let server = py_server(port);
    let body = format!("[[upstream]]\nname = \"py\"\nurl = \"http://127.0.0.1:{port}/mcp\"\ntimeout = \"10s\"\n");
    let gw = Gateway::start("", &body);
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    let r = c.call("py__add", json!({"a": 2, "b": 3})).await;
    assert_eq!(text_of(&r), "5", "{r}");

    // The upstream restarts and forgets our session: its next answer to us is 404.
    drop(server);
    let _server = py_server(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failures = Vec::new();
    loop {
        let r = c.call("py__add", json!({"a": 20, "b": 22})).await;
        if text_of(&r) == "42" {
            break;
        }
        // While the gateway re-initializes, a call may fail, but only with the retryable "unavailable" code.
        assert_eq!(r["error"]["code"], -32014, "{r}");
        failures.push(r);
        assert!(Instant::now() < deadline, "never recovered: {failures:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failures.len() <= 2, "recovered only after {} failures", failures.len());
    assert!(gw.log_text().contains("re-initializing"), "{}", gw.log_text());
}

#[tokio::test]
async fn legacy_sse_upstream() {
    let port = free_port();
    let bin = repo_root().join("tests/peers/node_modules/.bin/mcp-server-everything");
    let child = Command::new("node")
        .arg(&bin)
        .arg("sse")
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _child = Killed(child);
    wait_port(port);
    let body = format!("[[upstream]]\nname = \"old\"\nurl = \"http://127.0.0.1:{port}/sse\"\ntransport = \"sse\"\n");
    let gw = Gateway::start("", &body);
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    let r = c.call("old__echo", json!({"message": "through sse"})).await;
    assert_eq!(text_of(&r), "Echo: through sse", "{r}");
    let tools = c.request("tools/list", json!({})).await;
    assert!(tools["result"]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "old__get-sum"));
}

/// An upstream that demands its API key on every request, the handshake included. (Multi-threaded: the harness
/// blocks while the gateway starts, and this upstream runs on the test's runtime.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_credential_is_sent_on_every_upstream_request() {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let s2 = seen.clone();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let seen = s2.clone();
            async move {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let method = v["method"].as_str().unwrap_or("response").to_owned();
                let ok = headers.get("x-api-key").and_then(|h| h.to_str().ok()) == Some("s3cret-upstream-key");
                seen.lock().unwrap().push((method.clone(), ok));
                if !ok {
                    return (StatusCode::UNAUTHORIZED, "missing key").into_response();
                }
                let result = match method.as_str() {
                    "initialize" => json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "keyed", "version": "1"}}),
                    "tools/list" => json!({"tools": [{"name": "hello", "inputSchema": {"type": "object"}}]}),
                    "tools/call" => json!({"content": [{"type": "text", "text": "hello with key"}]}),
                    _ => return StatusCode::ACCEPTED.into_response(),
                };
                axum::Json(json!({"jsonrpc": "2.0", "id": v["id"], "result": result})).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let body = format!(
        "[[upstream]]\nname = \"keyed\"\nurl = \"http://127.0.0.1:{port}/mcp\"\ncredential = {{ kind = \"static\", value_env = \"KEYED_SECRET\", header = \"x-api-key\", raw = true }}\n"
    );
    let gw = Gateway::start_env("", &body, &[("KEYED_SECRET", "s3cret-upstream-key")]);
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    assert_eq!(text_of(&c.call("keyed__hello", json!({})).await), "hello with key");
    let seen = seen.lock().unwrap().clone();
    let methods: Vec<&str> = seen.iter().map(|(m, _)| m.as_str()).collect();
    assert!(methods.contains(&"initialize") && methods.contains(&"tools/list"), "{seen:?}");
    assert!(seen.iter().all(|(_, ok)| *ok), "every request carried the key: {seen:?}");
    assert!(!gw.log_text().contains("s3cret-upstream-key"), "the secret is never logged");
}
