//! Tasks through the gateway (2025-11-25 form) against server-everything's `simulate-research-query`
//! (`taskSupport: "required"`): creation, polling, result, cancellation, listing, and binding to the principal
//! that created the task.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const ALICE: &str = "pck_alice-test-key-0123456789abcdefghijklmnopqrstuv";
const BOB: &str = "pck_bob-test-key-0123456789abcdefghijklmnopqrstuvwxy";

fn gateway() -> Gateway {
    let key = |id: &str, k: &str| {
        format!(
            "[[auth.api_key]]\nid = \"{id}\"\nsha256 = \"{}\"\nsubject = \"{id}\"\n",
            hex(&Sha256::digest(k.as_bytes()))
        )
    };
    let auth = format!("[auth]\nresource = \"http://127.0.0.1/mcp\"\n{}{}", key("alice", ALICE), key("bob", BOB));
    Gateway::start("", &format!("{auth}\n{}", everything_upstream("everything")))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn client(gw: &Gateway, key: &str) -> Http {
    let mut c = Http::bearer(&gw.mcp(None), key);
    c.initialize(json!({})).await;
    c
}

async fn start_task(c: &mut Http, topic: &str) -> String {
    let r = c
        .request(
            "tools/call",
            json!({"name": "everything__simulate-research-query", "arguments": {"topic": topic}, "task": {"ttl": 60000}}),
        )
        .await;
    let id = r["result"]["task"]["taskId"].as_str().unwrap_or_else(|| panic!("no task in {r}")).to_owned();
    assert!(id.starts_with("everything__"), "task ids are namespaced per upstream: {id}");
    id
}

#[tokio::test]
async fn task_lifecycle_and_binding_to_its_creator() {
    let gw = gateway();
    let mut alice = client(&gw, ALICE).await;
    let mut bob = client(&gw, BOB).await;

    let init = alice.request("ping", json!({})).await;
    assert_eq!(init["result"], json!({}));
    let tools = alice.request("tools/list", json!({})).await;
    let research = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "everything__simulate-research-query")
        .unwrap()
        .clone();
    assert_eq!(research["execution"]["taskSupport"], "required");

    let task = start_task(&mut alice, "gateways").await;

    // Another principal cannot see, poll, fetch or cancel it: same answer as a task that does not exist.
    for m in ["tasks/get", "tasks/result", "tasks/cancel"] {
        let r = bob.request(m, json!({"taskId": task})).await;
        assert_eq!(r["error"]["code"], -32602, "{m}: {r}");
        let none = bob.request(m, json!({"taskId": "everything__no-such-task"})).await;
        assert_eq!(r["error"], none["error"], "{m}: hidden and missing tasks look alike");
    }
    let listed = bob.request("tasks/list", json!({})).await;
    assert_eq!(listed["result"]["tasks"], json!([]), "{listed}");
    let listed = alice.request("tasks/list", json!({})).await;
    let ids: Vec<&str> =
        listed["result"]["tasks"].as_array().unwrap().iter().map(|t| t["taskId"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![task.as_str()], "{listed}");

    // Poll to completion, then fetch the result.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let r = alice.request("tasks/get", json!({"taskId": task})).await;
        assert_eq!(r["result"]["taskId"], task.as_str(), "{r}");
        let s = r["result"]["status"].as_str().unwrap().to_owned();
        if s != "working" || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(status, "completed");
    let r = alice.request("tasks/result", json!({"taskId": task})).await;
    let text = r["result"]["content"][0]["text"].as_str().unwrap_or_default().to_owned();
    assert!(text.contains("gateways"), "{r}");
    if let Some(rel) = r["result"]["_meta"].get("io.modelcontextprotocol/related-task") {
        assert_eq!(rel["taskId"], task.as_str(), "related-task ids are renamed too: {r}");
    }
}

#[tokio::test]
async fn task_cancellation() {
    let gw = gateway();
    let mut alice = client(&gw, ALICE).await;
    let task = start_task(&mut alice, "to be cancelled").await;
    let r = alice.request("tasks/cancel", json!({"taskId": task})).await;
    assert!(r.get("error").is_none(), "{r}");
    let r: Value = alice.request("tasks/get", json!({"taskId": task})).await;
    assert_eq!(r["result"]["status"], "cancelled", "{r}");
}
