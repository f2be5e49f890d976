//! The stateless protocol era (2026-07-28) served next to the session era: discover, the validation ladder with
//! exact statuses and codes, resultType and cache hints, cancellation by closing the stream, subscriptions/listen,
//! and the real Python client in `2026-07-28` and `auto` modes.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

const V: &str = "2026-07-28";

fn envelope() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": V,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "0"},
    })
}

fn body(id: i64, method: &str, mut params: Value) -> String {
    params["_meta"] = envelope();
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

async fn modern(c: &Http, method: &str, params: Value, name: Option<&str>) -> Reply {
    let mut h = vec![("mcp-protocol-version", V), ("mcp-method", method)];
    if let Some(n) = name {
        h.push(("mcp-name", n));
    }
    c.raw(Method::POST, Some(body(1, method, params)), &h).await
}

fn gateway(extra: &str) -> Gateway {
    let m = marker("modern");
    Gateway::start(extra, &raw_upstream("raw", &m, "timeout = \"10s\""))
}

#[tokio::test]
async fn discover_lists_and_calls_carry_result_type_and_cache_hints() {
    let gw = gateway("");
    let c = Http::new(&gw.mcp(None));
    let r = modern(&c, "server/discover", json!({}), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["result"]["supportedVersions"], json!([V]));
    assert_eq!(v["result"]["resultType"], "complete");
    assert!(v["result"]["capabilities"]["tools"].is_object(), "{v}");
    assert_eq!(v["result"]["_meta"]["serverInfo"]["name"], "portcullis");
    assert!(r.headers.get("mcp-session-id").is_none(), "no sessions in the stateless era");

    let r = modern(&c, "tools/list", json!({}), None).await;
    let v = r.json();
    assert_eq!(v["result"]["resultType"], "complete");
    assert_eq!(v["result"]["ttlMs"], 0);
    // Anonymous mode: every caller sees the same list.
    assert_eq!(v["result"]["cacheScope"], "public");
    assert!(v["result"]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "raw__echo"));

    let r =
        modern(&c, "tools/call", json!({"name": "raw__echo", "arguments": {"text": "stateless"}}), Some("raw__echo"))
            .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.messages().pop().unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "stateless");
    assert_eq!(v["result"]["resultType"], "complete");
    // Byte preservation holds in this era too.
    assert!(r.body.contains(r#""_meta": {"vendor.example/trace": "t-1"}"#), "{}", r.body);
}

#[tokio::test]
async fn ladder_statuses_and_codes() {
    let gw = gateway("");
    let c = Http::new(&gw.mcp(None));
    let call = json!({"name": "raw__echo", "arguments": {"text": "x"}});

    // Mcp-Name disagrees with the body → 400 -32020.
    let r = modern(&c, "tools/call", call.clone(), Some("raw__pid")).await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!(-32020)), "{}", r.body);
    // Missing Mcp-Name on a name-bearing method → 400 -32020.
    let r = modern(&c, "tools/call", call.clone(), None).await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!(-32020)));
    // Base64 header form is decoded before comparing.
    let r = modern(&c, "tools/call", call.clone(), Some("=?base64?cmF3X19lY2hv?=")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Mcp-Method disagrees → -32020.
    let r = c
        .raw(
            Method::POST,
            Some(body(1, "tools/list", json!({}))),
            &[("mcp-protocol-version", V), ("mcp-method", "prompts/list")],
        )
        .await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!(-32020)));
    // A routing header sent twice → -32020 (first-copy and last-copy readers would disagree).
    let r = c
        .raw(
            Method::POST,
            Some(body(1, "tools/list", json!({}))),
            &[("mcp-protocol-version", V), ("mcp-method", "tools/list"), ("mcp-method", "tools/list")],
        )
        .await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!(-32020)), "{}", r.body);
    // Header version differs from the envelope → -32020 (checked before support).
    let r = c
        .raw(
            Method::POST,
            Some(body(1, "tools/list", json!({}))),
            &[("mcp-protocol-version", "2099-01-01"), ("mcp-method", "tools/list")],
        )
        .await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!(-32020)));
    // Consistent but unsupported version → 400 -32022 with {supported, requested}.
    let mut env = envelope();
    env["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let b = json!({"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"_meta": env}}).to_string();
    let r = c.raw(Method::POST, Some(b), &[("mcp-protocol-version", "2099-01-01"), ("mcp-method", "tools/list")]).await;
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["error"]["code"], -32022);
    assert_eq!(v["error"]["data"], json!({"supported": [V], "requested": "2099-01-01"}));
    // Missing envelope → 400 -32602.
    let b = json!({"jsonrpc":"2.0","id":4,"method":"tools/list","params":{}}).to_string();
    let r = c.raw(Method::POST, Some(b), &[("mcp-protocol-version", V), ("mcp-method", "tools/list")]).await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!(-32602)));
    // Unknown method → 404 -32601; session-era-only methods are unknown here.
    for m in ["no/such", "ping", "initialize"] {
        let r = modern(&c, m, json!({}), None).await;
        assert_eq!((r.status, r.json()["error"]["code"].clone()), (404, json!(-32601)), "{m}: {}", r.body);
    }
    // Unknown tool → 400 -32602 (the era's table maps invalid params to 400).
    let r = modern(&c, "tools/call", json!({"name": "nope"}), Some("nope")).await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!(-32602)));
    // Notifications are acknowledged and dropped.
    let n = json!({"jsonrpc":"2.0","method":"notifications/whatever","params":{"_meta": envelope()}}).to_string();
    let r =
        c.raw(Method::POST, Some(n), &[("mcp-protocol-version", V), ("mcp-method", "notifications/whatever")]).await;
    assert_eq!(r.status, 202);
}

#[tokio::test]
async fn closing_the_stream_cancels_the_upstream_call() {
    let gw = gateway("");
    let url = gw.mcp(None);
    let client = reqwest::Client::new();
    let send = client
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", V)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "raw__hang")
        .body(body(7, "tools/call", json!({"name": "raw__hang", "arguments": {}})))
        .send();
    // Give the call time to reach the upstream, then hang up.
    let _ = tokio::time::timeout(Duration::from_millis(700), send).await;
    let c = Http::new(&url);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = modern(
            &c,
            "tools/call",
            json!({"name": "raw__cancellations", "arguments": {}}),
            Some("raw__cancellations"),
        )
        .await;
        let text = r.messages().pop().unwrap()["result"]["content"][0]["text"].as_str().unwrap_or("").to_owned();
        if text.contains("closed the response stream") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "upstream never saw the cancellation: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn listen_acknowledges_then_streams_tagged_list_changed() {
    let gw = gateway("");
    let url = gw.mcp(None);
    let client = reqwest::Client::new();
    let mut resp = client
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", V)
        .header("mcp-method", "subscriptions/listen")
        .body(body(
            42,
            "subscriptions/listen",
            json!({"notifications": {"toolsListChanged": true, "resourceSubscriptions": ["x://y"]}}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    while !text.contains("acknowledged") {
        text.push_str(&String::from_utf8_lossy(&resp.chunk().await.unwrap().unwrap()));
    }
    let first = sse_messages(&text);
    assert_eq!(first[0]["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(first[0]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 42);
    // Only what the gateway will actually deliver is acknowledged.
    assert_eq!(first[0]["params"]["notifications"], json!({"toolsListChanged": true}));

    let c = Http::new(&url);
    let r =
        modern(&c, "tools/call", json!({"name": "raw__notify_changed", "arguments": {}}), Some("raw__notify_changed"))
            .await;
    assert_eq!(r.status, 200);
    while !text.contains("tools/list_changed") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await.unwrap().unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let msgs = sse_messages(&text);
    let changed = msgs.iter().find(|m| m["method"] == "notifications/tools/list_changed").unwrap();
    assert_eq!(changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 42);
}

#[tokio::test]
async fn python_client_in_modern_and_auto_modes() {
    let gw = gateway("");
    let steps = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "raw__echo", "args": {"text": "py-modern"}},
        {"op": "call", "tool": "raw__progress", "args": {"steps": 3}, "progress": true},
    ]);
    for mode in [V, "auto"] {
        let r = py_client("http", &gw.mcp(None), mode, &steps);
        assert_eq!(r["protocol_version"], V, "{mode}: {r}");
        assert_eq!(r["results"][1]["content"][0]["text"], "py-modern", "{mode}: {r}");
        assert_eq!(r["results"][2]["progress"], json!([1.0, 2.0, 3.0]), "{mode}: {r}");
    }
}

#[tokio::test]
async fn switched_off_auto_clients_fall_back() {
    let m = marker("modern-off");
    let gw = Gateway::start("stateless_era = false", &raw_upstream("raw", &m, ""));
    let c = Http::new(&gw.mcp(None));
    let r = modern(&c, "server/discover", json!({}), None).await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (404, json!(-32601)));
    let r =
        py_client("http", &gw.mcp(None), "auto", &json!([{"op": "call", "tool": "raw__echo", "args": {"text": "fb"}}]));
    assert_eq!(r["protocol_version"], "2025-11-25", "{r}");
}

#[tokio::test]
async fn session_era_upstream_questions_become_input_required() {
    let gw = gateway("");
    // The real Python client answers InputRequiredResult rounds with its callbacks and retries.
    let steps = json!([
        {"op": "call", "tool": "raw__sample", "args": {}},
        {"op": "call", "tool": "raw__elicit", "args": {}},
        {"op": "call", "tool": "raw__roots", "args": {}},
    ]);
    let r = py_client("http", &gw.mcp(None), V, &steps);
    assert_eq!(r["protocol_version"], V, "{r}");
    assert_eq!(r["results"][0]["content"][0]["text"], "sampled-by-py-client", "{r}");
    assert!(r["results"][1]["content"][0]["text"].as_str().unwrap().contains("py-elicit"), "{r}");
    assert_eq!(r["results"][2]["content"][0]["text"], "file:///tmp/portcullis-root", "{r}");
    assert_eq!((r["sampling_calls"].as_i64(), r["elicitation_calls"].as_i64()), (Some(1), Some(1)), "{r}");

    // By hand: the first answer is input_required with the upstream's request and an opaque state.
    let c = Http::new(&gw.mcp(None));
    let mut params = json!({"name": "raw__sample", "arguments": {}});
    params["_meta"] = envelope();
    params["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({"sampling": {}});
    let first = c
        .raw(
            Method::POST,
            Some(json!({"jsonrpc":"2.0","id":10,"method":"tools/call","params":params}).to_string()),
            &[("mcp-protocol-version", V), ("mcp-method", "tools/call"), ("mcp-name", "raw__sample")],
        )
        .await;
    let v = first.messages().pop().unwrap();
    assert_eq!(v["id"], 10);
    assert_eq!(v["result"]["resultType"], "input_required", "{v}");
    let (key, req) =
        v["result"]["inputRequests"].as_object().unwrap().iter().next().map(|(k, r)| (k.clone(), r.clone())).unwrap();
    assert_eq!(req["method"], "sampling/createMessage");
    let state = v["result"]["requestState"].as_str().unwrap().to_owned();

    let retry = |id: i64, state: &str, key: &str| {
        let mut p = params.clone();
        p["requestState"] = json!(state);
        p["inputResponses"] =
            json!({ key: {"role": "assistant", "content": {"type": "text", "text": "by-hand"}, "model": "m"} });
        json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":p}).to_string()
    };
    let h = [("mcp-protocol-version", V), ("mcp-method", "tools/call"), ("mcp-name", "raw__sample")];
    // A forged state is refused without touching the held call.
    let forged = format!("{}x", &state[..state.len() - 1]);
    let r = c.raw(Method::POST, Some(retry(11, &forged, &key)), &h).await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!(-32602)), "{}", r.body);
    // A wrong key is refused too.
    let r = c.raw(Method::POST, Some(retry(12, &state, "nope")), &h).await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!(-32602)), "{}", r.body);
    // Neither attempt disturbed the held call: the genuine retry completes it.
    let r = c.raw(Method::POST, Some(retry(21, &state, &key)), &h).await;
    let done = r.messages().pop().unwrap();
    assert_eq!(done["id"], 21, "the answer carries the retry's id: {done}");
    assert_eq!(done["result"]["content"][0]["text"], "by-hand", "{done}");
    assert_eq!(done["result"]["resultType"], "complete");
    // A state is single-use.
    let r = c.raw(Method::POST, Some(retry(22, &state, &key)), &h).await;
    assert_eq!(r.json()["error"]["code"], -32602);
}

/// A stateless-era-only upstream: probed once, called with the envelope; its InputRequiredResult becomes a
/// server-to-client request for a session-era client and passes through to a stateless-era client.
#[tokio::test]
async fn stateless_only_upstream_both_client_eras() {
    let m = marker("modern-up");
    let script = repo_root().join("tests/fixtures/raw_stdio_server.py");
    let body = format!(
        "[[upstream]]\nname = \"m\"\ncommand = [\"python3\", \"{}\", \"--modern-only\", \"--marker\", \"{m}\"]\nclient_requests = [\"sampling\"]\n",
        script.display()
    );
    let gw = Gateway::start("", &body);
    assert!(
        gw.log_text().contains("stateless era")
            || gw.wait_log_line(Duration::from_secs(5), |l| l.contains("stateless era")).is_some()
    );
    let steps = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "m__echo", "args": {"text": "to a modern upstream"}},
        {"op": "call", "tool": "m__whoami", "args": {}},
        {"op": "call", "tool": "m__sample", "args": {}},
    ]);
    for mode in ["legacy", V] {
        let r = py_client("http", &gw.mcp(None), mode, &steps);
        assert!(r["results"][0]["names"].as_array().unwrap().contains(&json!("m__echo")), "{mode}: {r}");
        assert_eq!(r["results"][1]["content"][0]["text"], "to a modern upstream", "{mode}: {r}");
        let seen: Value = serde_json::from_str(r["results"][2]["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(
            seen["_meta"]["io.modelcontextprotocol/protocolVersion"], V,
            "the envelope reaches the upstream: {seen}"
        );
        assert_eq!(seen["name"], "whoami");
        assert_eq!(r["results"][3]["content"][0]["text"], "modern:sampled-by-py-client", "{mode}: {r}");
        assert_eq!(r["sampling_calls"], 1, "{mode}: {r}");
    }
}

/// The dual-era `mcp-server-time` (stdio) behind the gateway, used by the Python client in both of its modern
/// modes: discover through the gateway, list, call.
#[tokio::test]
async fn dual_era_time_server_through_both_python_modes() {
    let time = repo_root().join(".venv/bin/mcp-server-time");
    let body =
        format!("[[upstream]]\nname = \"time\"\ncommand = [\"{}\", \"--local-timezone\", \"UTC\"]\n", time.display());
    let gw = Gateway::start("", &body);
    let steps = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "time__get_current_time", "args": {"timezone": "UTC"}},
    ]);
    for mode in [V, "auto", "legacy"] {
        let r = py_client("http", &gw.mcp(None), mode, &steps);
        let names = r["results"][0]["names"].as_array().unwrap().clone();
        assert!(
            names.contains(&json!("time__get_current_time")) && names.contains(&json!("time__convert_time")),
            "{mode}: {r}"
        );
        let text = r["results"][1]["content"][0]["text"].as_str().unwrap_or_default();
        assert!(text.contains("UTC"), "{mode}: {r}");
    }
}

/// The stateless era over stdio (`portcullis stdio`): the Python client's `2026-07-28` and `auto` modes.
#[tokio::test]
async fn stdio_downstream_in_the_stateless_era() {
    let m = marker("modern-stdio");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join(format!("{m}.toml"));
    std::fs::write(&cfg, raw_upstream("raw", &m, "")).unwrap();
    let steps = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "raw__echo", "args": {"text": "over stdio"}},
        {"op": "call", "tool": "raw__progress", "args": {"steps": 2}, "progress": true},
        {"op": "call", "tool": "raw__sample", "args": {}},
    ]);
    for mode in [V, "auto"] {
        let r = py_client("stdio", &stdio_target(&cfg, None), mode, &steps);
        assert_eq!(r["protocol_version"], V, "{mode}: {r}");
        assert_eq!(r["results"][1]["content"][0]["text"], "over stdio", "{mode}: {r}");
        assert_eq!(r["results"][2]["progress"], json!([1.0, 2.0]), "{mode}: {r}");
        assert_eq!(r["results"][3]["content"][0]["text"], "sampled-by-py-client", "{mode}: {r}");
    }
    assert!(wait_no_processes(&m, Duration::from_secs(10)).is_empty());
}

/// `per_session` upstreams and stateless clients: each request is its own session, so its child ends with it.
#[tokio::test]
async fn per_session_children_end_with_each_stateless_call() {
    let m = marker("modern-per-session");
    let gw = Gateway::start("", &raw_upstream("raw", &m, "per_session = true\nmax_children = 2"));
    let c = Http::new(&gw.mcp(None));
    let mut pids = Vec::new();
    for _ in 0..5 {
        let r = modern(&c, "tools/call", json!({"name": "raw__pid", "arguments": {}}), Some("raw__pid")).await;
        let v = r.messages().pop().unwrap();
        pids.push(v["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned());
    }
    pids.dedup();
    assert_eq!(pids.len(), 5, "a child per request: {pids:?}");
    // Only the catalog's own child stays.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while processes_with(&m).len() > 1 {
        assert!(std::time::Instant::now() < deadline, "per-request children left behind: {:?}", processes_with(&m));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
