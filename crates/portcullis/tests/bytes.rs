//! Byte preservation: what an upstream says reaches the client exactly as sent (the raw fixture serializes with
//! Python's `json.dumps`, i.e. `", "` and `": "` separators, which a re-serializing gateway would change), and
//! what a client sends reaches the upstream with only the tool name rewritten. Plus pagination across upstreams.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn gateway(tag: &str) -> Gateway {
    let m = marker(tag);
    Gateway::start("", &raw_upstream("raw", &m, "timeout = \"10s\""))
}

#[tokio::test]
async fn tools_list_items_keep_upstream_bytes() {
    let gw = gateway("bytes-list");
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    let r = c.post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = &r.body;
    let n = r.messages()[0]["result"]["tools"].as_array().unwrap().len();
    assert_eq!(n, 17, "{body}");
    // Only the name changed.
    assert!(body.contains(r#""name":"raw__echo""#) || body.contains(r#""name": "raw__echo""#), "{body}");

    // Values keep their bytes (Python's ", " / ": " separators inside them survive).
    for value in [
        r#"{"taskSupport": "optional"}"#,
        r#"{"vendor.example/color": "blue", "nested": {"a": [1, {"b": null}]}}"#,
        r#"{"readOnlyHint": true}"#,
    ] {
        assert_eq!(body.matches(value).count(), n, "{value} in {body}");
    }
    let schema = r#"{"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}"#;
    assert_eq!(body.matches(schema).count(), 3, "echo, log and stderr take {{text}}: {body}");

    // The items themselves, as the fixture emitted them.
    // Regression guard: before 9e2e428 the catalog re-rendered each item with compact separators
    // (`"execution":{...}`) when rewriting `name` (RawObject::to_json, crates/protocol/src/raw.rs).
    for needle in [
        r#""execution": {"taskSupport": "optional"}"#,
        r#""_meta": {"vendor.example/color": "blue", "nested": {"a": [1, {"b": null}]}}"#,
    ] {
        assert_eq!(body.matches(needle).count(), n, "{needle} in {body}");
    }
}

#[tokio::test]
async fn call_result_keeps_upstream_bytes() {
    let gw = gateway("bytes-call");
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    let (msgs, r) =
        c.request_all(json!(7), "tools/call", json!({"name":"raw__echo","arguments":{"text":"héllo \"q\""}})).await;
    assert_eq!(msgs.len(), 1, "{}", r.body);
    let body = &r.body;
    // json.dumps escapes non-ASCII (ensure_ascii) and quotes; those escapes must survive untouched too.
    assert!(body.contains(r#""structuredContent": {"echo": "h\u00e9llo \"q\""}"#), "{body}");
    assert!(body.contains(r#""_meta": {"vendor.example/trace": "t-1"}"#), "{body}");
    assert!(body.contains(r#"{"content": [{"type": "text", "text": "h\u00e9llo \"q\""}], "#), "{body}");
    assert_eq!(msgs[0]["id"], 7);
    assert_eq!(msgs[0]["result"]["structuredContent"]["echo"], "héllo \"q\"");
}

#[tokio::test]
async fn forwarded_params_keep_client_fields() {
    let gw = gateway("bytes-params");
    let c = {
        let mut c = Http::new(&gw.mcp(None));
        c.initialize(json!({})).await;
        c
    };
    // Sent as literal text so nothing on our side normalizes it.
    let body = r#"{"jsonrpc":"2.0","id":"w-1","method":"tools/call","params":{"name":"raw__whoami","arguments":{"k":[1,2.5,"é",null]},"_meta":{"vendor.example/req":{"deep":[true,{"x":"y"}]},"other.example/n":42},"vendorExt":{"keep":"me","n":[0]},"task":{"ttl":60000}}}"#;
    let r = c.raw(reqwest::Method::POST, Some(body.to_owned()), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let resp = r.messages().into_iter().find(|m| m["id"] == "w-1").unwrap();
    let got: Value = serde_json::from_str(&text_of(&resp)).unwrap_or_else(|e| panic!("{e}: {resp}"));
    let want = json!({
        "name": "whoami",
        "arguments": {"k": [1, 2.5, "é", null]},
        "_meta": {"vendor.example/req": {"deep": [true, {"x": "y"}]}, "other.example/n": 42},
        "vendorExt": {"keep": "me", "n": [0]},
        "task": {"ttl": 60000},
    });
    assert_eq!(got, want, "the upstream must receive the client's params with only `name` rewritten");
    // Key order as the client sent it (json.dumps keeps insertion order).
    let text = text_of(&resp);
    let order: Vec<usize> = ["\"name\"", "\"arguments\"", "\"_meta\"", "\"vendorExt\"", "\"task\""]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "params reordered: {text}");
}

#[tokio::test]
async fn pagination_across_upstreams_returns_every_tool_once() {
    let m = marker("bytes-page");
    // Two upstreams with 150 extra tools each (env reaches the child); r2 also pages its own list (10 per page,
    // so the gateway walks 17 upstream pages). Short timeouts bound the runtime should an upstream not come up.
    let limits = "timeout = \"3s\"\nconnect_timeout = \"5s\"\nenv = { RAW_TOOLS_EXTRA = \"150\" }";
    let body = format!(
        "{}{}",
        raw_upstream_args("r1", &m, &[], limits),
        raw_upstream_args("r2", &m, &["--page-size", "10"], limits),
    );
    let gw = Gateway::start("page_size = 100", &body);
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;

    let (mut seen, mut cursor, mut pages) = (Vec::<String>::new(), None::<String>, 0);
    loop {
        let params = match &cursor {
            Some(cur) => json!({"cursor": cur}),
            None => json!({}),
        };
        let r = c.request("tools/list", params).await;
        let tools = r["result"]["tools"].as_array().unwrap_or_else(|| panic!("{r}"));
        pages += 1;
        seen.extend(tools.iter().map(|t| t["name"].as_str().unwrap().to_owned()));
        match r["result"]["nextCursor"].as_str() {
            Some(next) => {
                assert_eq!(tools.len(), 100, "full pages before the last");
                cursor = Some(next.to_owned());
            }
            None => break,
        }
        assert!(pages < 20, "runaway pagination");
    }
    let base = [
        "echo",
        "progress",
        "crash",
        "hang",
        "slow",
        "garbage",
        "big",
        "sample",
        "roots",
        "elicit",
        "notify_changed",
        "log",
        "whoami",
        "env",
        "stderr",
        "cancellations",
        "pid",
    ];
    let want: BTreeSet<String> = ["r1", "r2"]
        .iter()
        .flat_map(|u| {
            base.iter().map(move |t| format!("{u}__{t}")).chain((0..150).map(move |i| format!("{u}__extra_{i}")))
        })
        .collect();
    let got: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), got.len(), "a tool was listed twice");
    assert_eq!(got, want);
    assert_eq!(pages, 4, "334 tools at 100 per page");

    // A listed extra tool is callable on the right upstream.
    let t = std::time::Instant::now();
    let r = c.call("r2__extra_149", json!({})).await;
    assert_eq!(text_of(&r), "extra_149", "{r} after {:?}\nlog:\n{}", t.elapsed(), gw.plain_log());

    // Bad cursors.
    for bad in [json!("garbage"), json!(""), json!(12)] {
        let r = c.request("tools/list", json!({"cursor": bad})).await;
        assert_eq!(error_code(&r), -32602, "cursor {bad}: {r}");
    }
}
