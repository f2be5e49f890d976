use super::*;
use serde_json::Value;

fn req(id: i64, method: &str, params: &str) -> Message {
    Message::parse(format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#).as_bytes())
        .unwrap()
}

async fn reply(mock: &Mock, msg: Message) -> Value {
    serde_json::from_str(&mock.handle(msg).await.unwrap().to_json()).unwrap()
}

#[tokio::test]
async fn initialize_echoes_version_and_declares_tools() {
    let m = Mock::new(MockConfig::default());
    let r = reply(&m, req(1, "initialize", r#"{"protocolVersion":"2025-03-26","capabilities":{}}"#)).await;
    assert_eq!(r["id"], 1);
    assert_eq!(r["result"]["protocolVersion"], "2025-03-26");
    assert_eq!(r["result"]["capabilities"], serde_json::json!({"tools":{"listChanged":true}}));
    let r = reply(&m, req(2, "initialize", "{}")).await;
    assert_eq!(r["result"]["protocolVersion"], PROTOCOL_VERSION);
}

#[tokio::test]
async fn lists_tools_and_ignores_notifications() {
    let m = Mock::new(MockConfig::default());
    let r = reply(&m, req(1, "tools/list", "{}")).await;
    let names: Vec<_> = r["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].clone()).collect();
    assert_eq!(names, ["echo", "work"]);
    let n = Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
    assert!(m.handle(n).await.is_none());
    let r = reply(&m, req(3, "resources/list", "{}")).await;
    assert_eq!(r["error"]["code"], code::METHOD_NOT_FOUND);
}

#[tokio::test]
async fn echo_pads_to_result_bytes() {
    let m = Mock::new(MockConfig { result_bytes: 10, ..MockConfig::default() });
    let r = reply(&m, req(1, "tools/call", r#"{"name":"echo","arguments":{"text":"hi"}}"#)).await;
    assert_eq!(r["result"]["content"][0]["text"], "hi........");
    assert_eq!(r["result"]["isError"], false);
    let long = "x".repeat(20);
    let r = reply(&m, req(2, "tools/call", &format!(r#"{{"name":"echo","arguments":{{"text":"{long}"}}}}"#))).await;
    assert_eq!(r["result"]["content"][0]["text"], long.as_str());
    let r = reply(&m, req(3, "tools/call", r#"{"name":"nope"}"#)).await;
    assert_eq!(r["error"]["code"], code::INVALID_PARAMS);
    assert_eq!(r["error"]["message"], "Unknown tool: nope");
}

#[tokio::test(start_paused = true)]
async fn work_respects_latency() {
    let m = Mock::new(MockConfig { latency: Duration::from_millis(50), ..MockConfig::default() });
    let t0 = tokio::time::Instant::now();
    reply(&m, req(1, "tools/call", r#"{"name":"echo"}"#)).await;
    assert_eq!(t0.elapsed(), Duration::ZERO);
    let r = reply(&m, req(2, "tools/call", r#"{"name":"work","arguments":{"text":"a"}}"#)).await;
    assert_eq!(t0.elapsed(), Duration::from_millis(50));
    assert_eq!(r["result"]["isError"], false);
}

async fn error_pattern(seed: u64, rate: f64) -> Vec<bool> {
    let m = Mock::new(MockConfig { error_rate: rate, seed, ..MockConfig::default() });
    let mut out = Vec::new();
    for i in 0..200 {
        let r = reply(&m, req(i, "tools/call", r#"{"name":"echo"}"#)).await;
        out.push(r["result"]["isError"].as_bool().unwrap());
    }
    out
}

#[tokio::test]
async fn error_rate_is_deterministic_per_seed() {
    let a = error_pattern(7, 0.25).await;
    assert_eq!(a, error_pattern(7, 0.25).await);
    assert_ne!(a, error_pattern(8, 0.25).await);
    let n = a.iter().filter(|e| **e).count();
    assert!((25..=75).contains(&n), "{n} errors of 200 at rate 0.25");
    assert!(error_pattern(7, 0.0).await.iter().all(|e| !e));
    assert!(error_pattern(7, 1.0).await.iter().all(|e| *e));
}

#[tokio::test]
async fn stdio_answers_each_line() {
    let (mut client, server_io) = tokio::io::duplex(1 << 16);
    let (server_in, server_out) = tokio::io::split(server_io);
    let server = tokio::spawn(stdio::serve(MockConfig::default().into(), server_in, server_out));
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    client
        .write_all(
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\nnot json\n\
              {\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n",
        )
        .await
        .unwrap();
    let mut lines = tokio::io::BufReader::new(client).lines();
    let mut got = [lines.next_line().await.unwrap().unwrap(), lines.next_line().await.unwrap().unwrap()];
    got.sort();
    assert_eq!(got[0], r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
    assert!(got[1].contains(r#""id":null,"error":{"code":-32700"#), "{}", got[1]);
    drop(lines);
    assert_eq!(server.await.unwrap().unwrap(), stdio::End::Eof);
}

#[path = "fault_tests.rs"]
mod faults;
