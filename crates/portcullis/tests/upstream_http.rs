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

/// A stateless-only (2026-07-28) HTTP upstream: discovered after `initialize` is refused, then called with the
/// envelope and the mirrored `Mcp-*` headers; a stateless client's `Mcp-Param-*` headers reach it unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_only_http_upstream_gets_envelope_and_param_headers() {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use std::sync::{Arc, Mutex};
    const V: &str = "2026-07-28";
    let seen: Arc<Mutex<Vec<(String, HeaderMap, serde_json::Value)>>> = Arc::default();
    let s2 = seen.clone();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let seen = s2.clone();
            async move {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let method = v["method"].as_str().unwrap_or("").to_owned();
                seen.lock().unwrap().push((method.clone(), headers.clone(), v.clone()));
                if v["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] != V {
                    let e = json!({"jsonrpc":"2.0","id":v["id"],"error":{"code":-32602,"message":"2026-07-28 only"}});
                    return (StatusCode::BAD_REQUEST, axum::Json(e)).into_response();
                }
                let result = match method.as_str() {
                    "server/discover" => json!({"supportedVersions": [V], "capabilities": {"tools": {}}, "resultType": "complete"}),
                    "tools/list" => json!({"tools": [{"name": "where", "inputSchema": {"type": "object"}}], "resultType": "complete"}),
                    "tools/call" => {
                        let region = headers.get("mcp-param-region").and_then(|h| h.to_str().ok()).unwrap_or("none");
                        json!({"content": [{"type": "text", "text": format!("region={region}")}], "resultType": "complete"})
                    }
                    _ => return (StatusCode::NOT_FOUND, "no").into_response(),
                };
                axum::Json(json!({"jsonrpc": "2.0", "id": v["id"], "result": result})).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let gw = Gateway::start("", &format!("[[upstream]]\nname = \"modern\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n"));
    let c = Http::new(&gw.mcp(None));
    let mut params = json!({"name": "modern__where", "arguments": {}});
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": V,
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let r = c
        .raw(
            reqwest::Method::POST,
            Some(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":params}).to_string()),
            &[
                ("mcp-protocol-version", V),
                ("mcp-method", "tools/call"),
                ("mcp-name", "modern__where"),
                ("mcp-param-region", "eu-west"),
            ],
        )
        .await;
    let v = r.messages().pop().unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "region=eu-west", "{v}");
    let seen = seen.lock().unwrap().clone();
    let (_, h, body) = seen.iter().find(|(m, _, _)| m == "tools/call").unwrap().clone();
    assert_eq!(h.get("mcp-method").unwrap(), "tools/call");
    assert_eq!(h.get("mcp-name").unwrap(), "where", "the upstream's own tool name is mirrored");
    assert_eq!(h.get("mcp-protocol-version").unwrap(), V);
    assert_eq!(body["params"]["_meta"]["io.modelcontextprotocol/clientInfo"]["name"], "portcullis");
    // A session-era client reaches the same upstream too (the envelope is the gateway's, not the client's).
    let mut legacy = Http::new(&gw.mcp(None));
    legacy.initialize(json!({})).await;
    assert_eq!(text_of(&legacy.call("modern__where", json!({})).await), "region=none");
}
