//! Many client sessions through one upstream: responses and progress notifications reach exactly the session
//! that asked, even when every session uses the same request ids and the same progress token. Per-session
//! upstreams get their own process, which ends with the session, up to `max_children`.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

const SESSIONS: usize = 50;
const ROUNDS: usize = 3;

/// One session's whole conversation; returns the pid its calls reached.
async fn session_work(url: String, i: usize) -> String {
    let mut c = Http::new(&url);
    c.initialize(json!({})).await;
    // Request ids are identical across sessions on purpose: every session numbers 1, 2, 3, ...
    for round in 0..ROUNDS {
        let text = format!("session-{i}-round-{round}");
        let id = c.bump();
        let (msgs, reply) =
            c.request_all(json!(id), "tools/call", json!({"name":"raw__echo","arguments":{"text":text}})).await;
        assert_eq!(msgs.len(), 1, "echo reply carries only its response: {}", reply.body);
        let m = &msgs[0];
        assert_eq!(m["id"], json!(id), "{m}");
        assert_eq!(text_of(m), text, "session {i} got someone else's answer: {m}");
        assert_eq!(m["result"]["structuredContent"]["echo"], json!(text), "{m}");

        // Same progress token (1) in every session; a per-session step count makes cross-talk visible.
        let steps = 2 + (i + round) % 4;
        let id = c.bump();
        let (msgs, reply) = c
            .request_all(
                json!(id),
                "tools/call",
                json!({"name":"raw__progress","arguments":{"steps":steps},"_meta":{"progressToken":1}}),
            )
            .await;
        let (progress, rest): (Vec<&Value>, Vec<&Value>) =
            msgs.iter().partition(|m| m["method"] == "notifications/progress");
        assert_eq!(rest.len(), 1, "exactly one response: {}", reply.body);
        assert_eq!(rest[0]["id"], json!(id), "{}", reply.body);
        assert_eq!(text_of(rest[0]), format!("done {steps}"), "{}", reply.body);
        assert_eq!(progress.len(), steps, "session {i} round {round}: wrong progress notifications: {}", reply.body);
        for (k, p) in progress.iter().enumerate() {
            assert_eq!(p["params"]["progressToken"], json!(1), "client's token restored: {p}");
            assert_eq!(p["params"]["progress"], json!(k + 1), "{p}");
            assert_eq!(p["params"]["total"], json!(steps), "someone else's progress: {p}");
        }
    }
    let pid = text_of(&c.call("raw__pid", json!({})).await);
    assert!(pid.parse::<u32>().is_ok(), "{pid}");
    pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_sessions_share_one_child_without_cross_talk() {
    let m = marker("conc");
    let gw = Gateway::start("", &raw_upstream("raw", &m, "timeout = \"60s\""));
    let url = gw.mcp(None);
    let tasks: Vec<_> = (0..SESSIONS).map(|i| tokio::spawn(session_work(url.clone(), i))).collect();
    let mut pids = HashSet::new();
    for t in tasks {
        pids.insert(t.await.unwrap());
    }
    assert_eq!(pids.len(), 1, "all sessions must share one child: {pids:?}");
    let pid: u32 = pids.into_iter().next().unwrap().parse().unwrap();
    assert_eq!(processes_with(&m), vec![pid], "exactly one child process carries the marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_session_children_are_separate_capped_and_reaped() {
    let m = marker("persess");
    let gw = Gateway::start("", &raw_upstream("raw", &m, "timeout = \"30s\"\nper_session = true\nmax_children = 2"));
    let url = gw.mcp(None);

    let mut a = Http::new(&url);
    a.initialize(json!({})).await;
    let mut b = Http::new(&url);
    b.initialize(json!({})).await;
    let pa: u32 = text_of(&a.call("raw__pid", json!({})).await).parse().unwrap();
    let pb: u32 = text_of(&b.call("raw__pid", json!({})).await).parse().unwrap();
    assert_ne!(pa, pb, "per_session: each session has its own child");
    let live = processes_with(&m);
    assert!(live.contains(&pa) && live.contains(&pb), "{live:?}");
    // Each session keeps its own child.
    assert_eq!(text_of(&a.call("raw__pid", json!({})).await), pa.to_string());

    // A third session is over max_children.
    let mut c = Http::new(&url);
    c.initialize(json!({})).await;
    let r = c.call("raw__pid", json!({})).await;
    assert_eq!(error_code(&r), -32012, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains('2'), "error names the limit: {r}");

    // DELETE ends the session and its child.
    assert_eq!(a.delete().await, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while processes_with(&m).contains(&pa) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!processes_with(&m).contains(&pa), "child {pa} of the deleted session is still running");
    assert!(processes_with(&m).contains(&pb), "the other session's child must survive");

    // The freed slot is usable again.
    let r = c.call("raw__pid", json!({})).await;
    let pc: u32 = text_of(&r).parse().unwrap_or_else(|_| panic!("{r}"));
    assert!(pc != pa && pc != pb);
}
