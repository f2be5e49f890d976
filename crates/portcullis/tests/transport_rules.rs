//! Streamable HTTP transport rules a client can observe: exact statuses and JSON-RPC codes for bad input.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use reqwest::Method;
use serde_json::json;

fn gateway(server_extra: &str) -> Gateway {
    let m = marker("rules");
    Gateway::start(server_extra, &raw_upstream("raw", &m, "timeout = \"5s\""))
}

#[tokio::test]
async fn session_lifecycle_and_errors() {
    let gw = gateway("");
    let mut c = Http::new(&gw.mcp(None));

    // No session header → 400; unknown session → 404.
    let r = c.post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("Mcp-Session-Id"), "{}", r.body);
    c.session = Some("deadbeef".into());
    let r = c.post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"})).await;
    assert_eq!(r.status, 404, "{}", r.body);
    c.session = None;

    let init = c.initialize(json!({})).await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(init["result"]["serverInfo"]["name"], "portcullis");
    let sid = c.session.clone().unwrap();
    assert_eq!(sid.len(), 32, "128-bit hex session id");
    assert!(sid.bytes().all(|b| b.is_ascii_hexdigit()));

    // Version negotiation: an unknown version gets our latest; a known older one is echoed.
    let old = Http::new(&gw.mcp(None));
    let r = old
        .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}))
        .await;
    assert_eq!(r.messages()[0]["result"]["protocolVersion"], "2025-03-26");
    let r = old
        .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"1999-01-01","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}))
        .await;
    assert_eq!(r.messages()[0]["result"]["protocolVersion"], "2025-11-25");

    // Bad MCP-Protocol-Version header → 400.
    let r = c
        .raw(
            Method::POST,
            Some(json!({"jsonrpc":"2.0","id":5,"method":"ping"}).to_string()),
            &[("mcp-protocol-version", "2099-01-01")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    // ping answered locally.
    let pong = c.request("ping", json!({})).await;
    assert_eq!(pong["result"], json!({}));

    // Malformed JSON → 400 + -32700; not JSON-RPC → -32600.
    let r = c.raw(Method::POST, Some("{not json".into()), &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32700);
    let r = c.raw(Method::POST, Some(r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#.into()), &[]).await;
    assert_eq!(r.json()["error"]["code"], -32600);
    let r = c
        .raw(Method::POST, Some(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping"}"#.into()), &[])
        .await;
    assert_eq!(r.json()["error"]["code"], -32600, "duplicate keys are rejected: {}", r.body);

    // Unknown method → -32601; unknown tool → -32602.
    let r = c.request("no/such", json!({})).await;
    assert_eq!(r["error"]["code"], -32601);
    let r = c.call("raw__nope", json!({})).await;
    assert_eq!(r["error"]["code"], -32602);
    assert_eq!(r["error"]["message"], "Unknown tool: raw__nope");

    // Wrong Accept → 406; wrong Content-Type → 415.
    let r = c
        .raw(
            Method::POST,
            Some(json!({"jsonrpc":"2.0","id":9,"method":"ping"}).to_string()),
            &[("accept", "text/html")],
        )
        .await;
    assert_eq!(r.status, 406);
    let r = c.raw(Method::POST, Some("x".into()), &[("content-type", "text/plain")]).await;
    assert_eq!(r.status, 415);

    // Notifications and responses → 202 with no body.
    let r = c.post(&json!({"jsonrpc":"2.0","method":"notifications/roots/list_changed"})).await;
    assert_eq!(r.status, 202);
    assert!(r.body.is_empty());

    // Batches only for 2025-03-26 sessions.
    let r = c.raw(Method::POST, Some(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.into()), &[]).await;
    assert_eq!(r.status, 400, "{}", r.body);

    // DELETE ends the session; afterwards it is 404 everywhere.
    let r = c.raw(Method::DELETE, None, &[]).await;
    assert_eq!(r.status, 200);
    let r = c.post(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})).await;
    assert_eq!(r.status, 404);
    let r = c.raw(Method::GET, None, &[("accept", "text/event-stream")]).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn batches_work_for_2025_03_26() {
    let gw = gateway("");
    let mut c = Http::new(&gw.mcp(None));
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}))
        .await;
    c.session = Some(r.headers.get("mcp-session-id").unwrap().to_str().unwrap().into());
    let body = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"raw__echo","arguments":{"text":"in batch"}}}]"#;
    let r = c.raw(Method::POST, Some(body.into()), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let arr = r.json();
    assert_eq!(arr.as_array().unwrap().len(), 2);
    assert_eq!(arr[0]["id"], 1);
    assert_eq!(arr[1]["id"], "b");
    assert_eq!(arr[1]["result"]["content"][0]["text"], "in batch");
}

#[tokio::test]
async fn body_limit_host_and_origin() {
    let gw = gateway("max_body = \"2KiB\"");
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    let big = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"raw__echo","arguments":{"text":"x".repeat(4096)}}});
    let r = c.post(&big).await;
    assert_eq!(r.status, 413, "{}", r.body);
    // The session survives and the next call works.
    let ok = c.call("raw__echo", json!({"text":"small"})).await;
    assert_eq!(text_of(&ok), "small");

    // DNS rebinding: a foreign Host gets 421, a foreign Origin 403; loopback origins pass.
    let r = c
        .raw(
            Method::POST,
            Some(json!({"jsonrpc":"2.0","id":2,"method":"ping"}).to_string()),
            &[("host", "evil.example:80")],
        )
        .await;
    assert_eq!(r.status, 421);
    let r = c
        .raw(
            Method::POST,
            Some(json!({"jsonrpc":"2.0","id":2,"method":"ping"}).to_string()),
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(r.status, 403);
    let r = c
        .raw(
            Method::POST,
            Some(json!({"jsonrpc":"2.0","id":2,"method":"ping"}).to_string()),
            &[("origin", "http://localhost:5173")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn configured_origins_are_exact() {
    let gw = gateway("allowed_origins = [\"https://app.example\"]\nallowed_hosts = [\"127.0.0.1\"]");
    let c = Http::new(&gw.mcp(None));
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}).to_string();
    let r = c.raw(Method::POST, Some(init.clone()), &[("origin", "https://app.example")]).await;
    assert_eq!(r.status, 200);
    let r = c.raw(Method::POST, Some(init.clone()), &[("origin", "http://localhost:3000")]).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn get_stream_is_single_and_resumable() {
    let gw = gateway("");
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    let sid = c.session.clone().unwrap();
    // Open the standalone stream and keep it open.
    let first =
        c.client.get(&c.url).header("accept", "text/event-stream").header("mcp-session-id", &sid).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    let second = c.raw(Method::GET, None, &[("accept", "text/event-stream")]).await;
    assert_eq!(second.status, 409, "{}", second.body);
    drop(first);

    // A list_changed from the upstream lands on the standalone stream, with an id we can resume after.
    let r = c.call("raw__notify_changed", json!({})).await;
    assert_eq!(text_of(&r), "ok");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut resp = c
        .client
        .get(&c.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .header("last-event-id", "0-0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    while !text.contains("list_changed") {
        let chunk =
            tokio::time::timeout(std::time::Duration::from_secs(10), resp.chunk()).await.unwrap().unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("id: 0-"), "{text}");
    assert!(text.contains("notifications/tools/list_changed"), "{text}");
}

#[tokio::test]
async fn topics_and_unknown_endpoints() {
    let m = marker("topics");
    let body = format!(
        "{}\n[[topic]]\nname = \"support\"\ntools = [\"raw__echo\", \"raw__pid\"]\naliases = {{ say = \"raw__echo\" }}\n",
        raw_upstream("raw", &m, "")
    );
    let gw = Gateway::start("all_tools_endpoint = false", &body);
    let mut c = Http::new(&gw.mcp(Some("support")));
    c.initialize(json!({})).await;
    let list = c.request("tools/list", json!({})).await;
    let names: Vec<&str> =
        list["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["say", "raw__pid"]);
    assert_eq!(text_of(&c.call("say", json!({"text":"aliased"})).await), "aliased");
    // A tool outside the topic answers exactly like a tool that does not exist.
    let hidden = c.call("raw__env", json!({})).await;
    let missing = c.call("raw__does_not_exist", json!({})).await;
    assert_eq!(hidden["error"]["code"], missing["error"]["code"]);
    assert_eq!(hidden["error"]["message"], "Unknown tool: raw__env");
    // The aliased name's original is hidden in the topic.
    assert_eq!(c.call("raw__echo", json!({"text":"x"})).await["error"]["code"], -32602);

    // /mcp is switched off; unknown topics are 404.
    let off = Http::new(&gw.mcp(None));
    let r = off.post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{}})).await;
    assert_eq!(r.status, 404);
    let nope = Http::new(&gw.mcp(Some("nope")));
    assert_eq!(nope.post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{}})).await.status, 404);
    // A session id from one topic is not valid on another endpoint.
    let mut other = Http::new(&gw.mcp(Some("nope")));
    other.session = c.session.clone();
    assert_eq!(other.post(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})).await.status, 404);
}

#[tokio::test]
async fn stateless_probe_falls_back_and_health_endpoints() {
    let gw = gateway("stateless_era = false");
    let c = Http::new(&gw.mcp(None));
    let r = c
        .raw(
            Method::POST,
            Some(json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}).to_string()),
            &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "server/discover")],
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], -32601);
    let admin = gw.admin.clone().unwrap();
    let h = reqwest::get(format!("{admin}/healthz")).await.unwrap();
    assert_eq!(h.status(), 200);
    let ready = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let v: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(v["ready"], true);
}

#[tokio::test]
async fn log_messages_respect_each_sessions_level() {
    let gw = gateway("");
    let mut quiet = Http::new(&gw.mcp(None));
    quiet.initialize(json!({})).await;
    let mut chatty = Http::new(&gw.mcp(None));
    chatty.initialize(json!({})).await;
    assert_eq!(quiet.request("logging/setLevel", json!({"level": "error"})).await["result"], json!({}));
    assert_eq!(chatty.request("logging/setLevel", json!({"level": "debug"})).await["result"], json!({}));
    let bad = chatty.request("logging/setLevel", json!({"level": "loud"})).await;
    assert_eq!(bad["error"]["code"], -32602);
    // The upstream logs at info: the chatty session sees it next to the answer, the quiet one does not.
    for (c, expect) in [(&mut chatty, true), (&mut quiet, false)] {
        let id = c.bump();
        let r = c.post(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"raw__log","arguments":{"text":"hello log"}}})).await;
        let msgs = r.messages();
        let logged = msgs.iter().any(|m| m["method"] == "notifications/message" && m["params"]["data"] == "hello log");
        assert_eq!(logged, expect, "{msgs:?}");
        assert!(msgs.iter().any(|m| m["id"] == json!(id)), "{msgs:?}");
    }
}

/// Malformed params get a clear -32602 naming what is wrong, never a panic or an upstream call.
#[tokio::test]
async fn bad_params_are_rejected_with_clear_errors() {
    let gw = gateway("");
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    let cases = [
        // Duplicate `name` inside params: the gateway must not judge one and forward the other.
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"raw__echo","name":"raw__env"}}"#,
            -32602,
            "duplicate",
        ),
        (r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":["raw__echo"]}"#, -32602, "invalid params"),
        (r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":7}}"#, -32602, "params.name"),
        (r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"cursor":12}}"#, -32602, "cursor"),
        (r#"{"jsonrpc":"2.0","id":5,"method":"resources/read","params":{}}"#, -32602, "params.uri"),
        (
            r#"{"jsonrpc":"2.0","id":6,"method":"resources/read","params":{"uri":"nowhere://x"}}"#,
            -32002,
            "Resource not found",
        ),
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"completion/complete","params":{"ref":{"type":"ref/other"}}}"#,
            -32602,
            "ref/prompt",
        ),
        (r#"{"jsonrpc":"2.0","id":8,"method":"tasks/get","params":{}}"#, -32602, "taskId"),
        (r#"{"jsonrpc":"2.0","id":9,"method":"prompts/get","params":{"name":"raw__nope"}}"#, -32602, "Unknown prompt"),
    ];
    for (body, code, needle) in cases {
        let r = c.raw(Method::POST, Some(body.into()), &[]).await;
        let v = r.messages().pop().unwrap_or_else(|| panic!("{body}: {}", r.body));
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    // None of it reached the upstream as a call: the session still works and the upstream saw no `env` call.
    assert_eq!(text_of(&c.call("raw__echo", json!({"text": "still fine"})).await), "still fine");
}
