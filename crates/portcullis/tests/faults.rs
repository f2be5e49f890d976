//! Upstream faults a client must survive: crashes, hangs, garbage on stdout, oversized messages, server-to-client
//! requests nobody may answer, and client cancellation. Each fault ends in a prompt, precise JSON-RPC answer.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn gateway(tag: &str, extra: &str) -> Gateway {
    let m = marker(tag);
    Gateway::start("", &raw_upstream("raw", &m, extra))
}

fn cancellations(resp: &Value) -> Vec<Value> {
    serde_json::from_str(&text_of(resp)).unwrap_or_else(|e| panic!("cancellations not JSON ({e}): {resp}"))
}

#[tokio::test]
async fn crash_fails_promptly_and_next_call_succeeds() {
    let gw = gateway("crash", "timeout = \"30s\"");
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    let pid_before = text_of(&c.call("raw__pid", json!({})).await);

    let t = Instant::now();
    let r = c.call("raw__crash", json!({})).await;
    let took = t.elapsed();
    assert_eq!(error_code(&r), -32014, "{r}");
    assert!(took < Duration::from_secs(5), "crash answered after {took:?} (requirement: 1 s)");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("raw"), "error should name the upstream: {msg}");
    assert_eq!(r["error"]["data"]["upstream"], "raw", "{r}");

    // Immediately: the call waits for the restart (initial backoff 200ms) instead of failing.
    // Regression guard: before 9e2e428 this failed at once with -32014 "not connected" (the status watch's value
    // was lost with no receiver, conn.rs `watch::Sender::send`, and a call could slip in between the crash and
    // the supervisor publishing it).
    let r = c.call("raw__echo", json!({"text": "after crash"})).await;
    assert_eq!(text_of(&r), "after crash", "{r}\nlog:\n{}", gw.plain_log());
    let pid_after = text_of(&c.call("raw__pid", json!({})).await);
    assert_ne!(pid_before, pid_after, "a new child serves after the crash");
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_fails_other_sessions_in_flight_calls() {
    let gw = gateway("crash2", "timeout = \"30s\"");
    let mut a = Http::new(&gw.mcp(None));
    a.initialize(json!({})).await;
    let mut b = Http::new(&gw.mcp(None));
    b.initialize(json!({})).await;

    let hang = tokio::spawn(async move {
        let t = Instant::now();
        let r = b.call("raw__hang", json!({})).await;
        (r, t.elapsed())
    });
    // Let B's call reach the child (a short pause; the crash below only has to come after it).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!hang.is_finished(), "raw__hang must not answer by itself");

    let t = Instant::now();
    let r = a.call("raw__crash", json!({})).await;
    assert_eq!(error_code(&r), -32014, "{r}");
    let (rb, _) = tokio::time::timeout(Duration::from_secs(5), hang)
        .await
        .expect("session B's in-flight call hung after the child crashed")
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(error_code(&rb), -32014, "{rb}");
    assert!(rb["error"]["message"].as_str().unwrap().contains("in flight"), "{rb}");

    // Both sessions keep working once the child is back.
    // (Regression guard, see crash_fails_promptly_and_next_call_succeeds.)
    let r = a.call("raw__echo", json!({"text": "a ok"})).await;
    assert_eq!(text_of(&r), "a ok", "{r}");
}

#[tokio::test]
async fn hang_times_out_and_upstream_is_told() {
    let gw = gateway("hang", "timeout = \"1s\"");
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;

    let t = Instant::now();
    let r = c.call("raw__hang", json!({})).await;
    let took = t.elapsed();
    assert_eq!(error_code(&r), -32013, "{r}");
    assert!(took >= Duration::from_millis(900), "timed out too early: {took:?}");
    assert!(took < Duration::from_secs(5), "timed out too late: {took:?}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("raw") && msg.contains("1s"), "{msg}");

    // The upstream got notifications/cancelled for it (sent before the error was returned).
    let got = cancellations(&c.call("raw__cancellations", json!({})).await);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0]["requestId"].is_i64(), "{got:?}");
    assert!(got[0]["reason"].as_str().unwrap().contains("timed out"), "{got:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_line_is_logged_and_harmless() {
    let gw = gateway("garbage", "timeout = \"10s\"");
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    let mut d = Http::new(&gw.mcp(None));
    d.initialize(json!({})).await;

    let other = tokio::spawn(async move {
        let mut out = Vec::new();
        for i in 0..10 {
            out.push(text_of(&d.call("raw__echo", json!({"text": format!("d{i}")})).await));
        }
        out
    });
    let r = c.call("raw__garbage", json!({})).await;
    assert_eq!(text_of(&r), "after-garbage", "{r}");
    let echoes = other.await.unwrap();
    assert_eq!(echoes, (0..10).map(|i| format!("d{i}")).collect::<Vec<_>>());
    let r = c.call("raw__echo", json!({"text": "still fine"})).await;
    assert_eq!(text_of(&r), "still fine");

    let line = gw
        .wait_log_line(Duration::from_secs(5), |l| l.contains("WARN") && l.contains("this is not json"))
        .unwrap_or_else(|| panic!("no warning about the garbage line; log:\n{}", gw.plain_log()));
    assert!(line.contains("upstream=raw"), "warning must name the upstream: {line}");
}

#[tokio::test]
async fn oversized_message_is_a_clear_error() {
    let gw = gateway("big", "timeout = \"10s\"\nmax_message = \"64KiB\"");
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;

    // Under the limit passes.
    let r = c.call("raw__big", json!({"bytes": 1000})).await;
    assert_eq!(text_of(&r).len(), 1000);

    let t = Instant::now();
    let r = c.call("raw__big", json!({"bytes": 200000})).await;
    assert!(t.elapsed() < Duration::from_secs(5), "oversized answer took {:?}", t.elapsed());
    assert_eq!(error_code(&r), -32603, "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("max_message") && msg.contains("65536"), "error must name the limit: {msg}");
    assert!(msg.contains("raw"), "{msg}");

    let r = c.call("raw__echo", json!({"text": "next"})).await;
    assert_eq!(text_of(&r), "next", "{r}");
}

#[tokio::test]
async fn sampling_without_client_capability_errors_not_hangs() {
    let gw = gateway("nosample", "timeout = \"30s\"");
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await; // no sampling capability

    let t = Instant::now();
    let r = c.call("raw__sample", json!({})).await;
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    // The upstream received a JSON-RPC error for sampling/createMessage (the fixture reports it as isError).
    assert_eq!(r["result"]["isError"], json!(true), "{r}");
    let text = text_of(&r);
    assert!(text.starts_with("sampling error: "), "{text}");
    let e: Value = serde_json::from_str(text.trim_start_matches("sampling error: ")).unwrap();
    assert_eq!(e["code"], -32601, "{e}");
    assert!(e["message"].as_str().unwrap().contains("sampling"), "{e}");
}

#[tokio::test]
async fn sampling_not_granted_to_upstream_errors_not_hangs() {
    let m = marker("nogrant");
    let script = repo_root().join("tests/fixtures/raw_stdio_server.py");
    let body = format!(
        "[[upstream]]\nname = \"raw\"\ncommand = [\"python3\", \"{}\", \"--marker\", \"{m}\"]\ntimeout = \"30s\"\n",
        script.display()
    );
    let gw = Gateway::start("", &body);
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({"sampling": {}, "roots": {}})).await; // the client could answer; the upstream may not ask

    let t = Instant::now();
    let r = c.call("raw__sample", json!({})).await;
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert_eq!(r["result"]["isError"], json!(true), "{r}");
    let text = text_of(&r);
    let e: Value = serde_json::from_str(text.trim_start_matches("sampling error: ")).unwrap();
    assert_eq!(e["code"], -32601, "{e}");
    assert!(e["message"].as_str().unwrap().contains("not granted"), "{e}");
    assert!(e["message"].as_str().unwrap().contains("client_requests"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_cancellation_reaches_upstream_with_rewritten_id() {
    let gw = gateway("cancel", "timeout = \"30s\"");
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;

    // The upstream id of a call is visible through its rewritten progress token (the gateway uses its own id).
    async fn upstream_id_of_whoami(c: &Http, id: i64) -> i64 {
        let (msgs, _) = c
            .request_all(
                json!(id),
                "tools/call",
                json!({"name":"raw__whoami","arguments":{},"_meta":{"progressToken":"p"}}),
            )
            .await;
        let resp = msgs.iter().find(|m| m["id"] == json!(id)).unwrap();
        let params: Value = serde_json::from_str(&text_of(resp)).unwrap();
        params["_meta"]["progressToken"].as_i64().unwrap_or_else(|| panic!("{params}"))
    }
    let before = upstream_id_of_whoami(&c, 100).await;

    let client_id = "client-hang-7";
    let hang = {
        let mut c2 = Http::new(&c.url);
        c2.session = c.session.clone();
        tokio::spawn(async move {
            let r = c2
                .post(&json!({"jsonrpc":"2.0","id":client_id,"method":"tools/call","params":{"name":"raw__hang","arguments":{}}}))
                .await;
            (r.status, r.messages(), r.body)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Cancel (repeat until the upstream has seen it, in case the call was not yet tracked).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut next = 200;
    let got = loop {
        let n = c
            .post(&json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":client_id,"reason":"user pressed stop"}}))
            .await;
        assert_eq!(n.status, 202, "{}", n.body);
        next += 1;
        let (msgs, _) =
            c.request_all(json!(next), "tools/call", json!({"name":"raw__cancellations","arguments":{}})).await;
        let got = cancellations(msgs.iter().find(|m| m["id"] == json!(next)).unwrap());
        if !got.is_empty() || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got.len(), 1, "upstream should see exactly one notifications/cancelled: {got:?}");
    let after = upstream_id_of_whoami(&c, 300).await;
    let rid =
        got[0]["requestId"].as_i64().unwrap_or_else(|| panic!("requestId must be the gateway's integer id: {got:?}"));
    assert!(
        before < rid && rid < after,
        "requestId {rid} is not the hang's upstream id (between {before} and {after})"
    );
    assert_eq!(got[0]["reason"], "user pressed stop", "{got:?}");

    // The cancelled POST does not hang.
    let (status, msgs, body) = tokio::time::timeout(Duration::from_secs(5), hang)
        .await
        .expect("the cancelled request's POST never finished")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    // The POST ends with an answer for the cancelled id (today: -32603 "the call was cancelled"; the spec only
    // says a receiver SHOULD NOT answer a cancelled request, and an HTTP stream has to end somehow).
    let last = msgs.last().unwrap_or_else(|| panic!("empty reply: {body}"));
    assert_eq!(last["id"], client_id, "{body}");
}

/// An upstream that withdraws its own server-to-client request: the client's `notifications/cancelled` names the
/// id the client saw, not the upstream's.
#[tokio::test]
async fn upstream_withdrawn_request_is_cancelled_under_the_clients_id() {
    let m = marker("withdraw");
    let gw = Gateway::start("", &raw_upstream_args("raw", &m, &["--withdraw-tool"], ""));
    let call = |id: i64| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"raw__withdraw","arguments":{}}});
    // Session A consumes the upstream's first request id, so B's ids differ between upstream and client.
    let mut a = Http::new(&gw.mcp(None));
    a.initialize(json!({"sampling": {}})).await;
    a.post(&call(1)).await;
    let mut b = Http::new(&gw.mcp(None));
    b.initialize(json!({"sampling": {}})).await;
    let r = b.post(&call(1)).await;
    let msgs = r.messages();
    let asked = msgs.iter().find(|m| m["method"] == "sampling/createMessage").unwrap_or_else(|| panic!("{msgs:?}"));
    let cancelled =
        msgs.iter().find(|m| m["method"] == "notifications/cancelled").unwrap_or_else(|| panic!("{msgs:?}"));
    assert_eq!(cancelled["params"]["requestId"], asked["id"], "{msgs:?}");
    assert_eq!(cancelled["params"]["reason"], "withdrawn");
    let done = msgs.iter().find(|m| m["id"] == 1).unwrap();
    assert_eq!(done["result"]["content"][0]["text"], "withdrew 1", "the upstream used its own id 1: {done}");
}
