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
