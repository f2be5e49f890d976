use super::client::{classify, find_response};
use super::*;
use crate::mock::{serve_http, MockConfig};
use bytes::Bytes;
use portcullis_protocol::Id;

fn close(got: u64, want: u64) -> bool {
    got.abs_diff(want) * 1000 <= want
}

#[test]
fn percentiles_of_a_uniform_spread() {
    let mut s = Stats::new();
    for us in 1..=10_000u64 {
        s.record(Outcome::Ok, Duration::from_micros(us));
    }
    let r = Report::new("closed", 1, 1, None, Duration::from_secs(2)).fill(&s);
    assert_eq!(r.calls, 10_000);
    assert_eq!(r.throughput, 5_000.0);
    assert!(close(r.p50_us, 5_000), "{r}");
    assert!(close(r.p90_us, 9_000), "{r}");
    assert!(close(r.p99_us, 9_900), "{r}");
    assert!(close(r.p999_us, 9_990), "{r}");
    assert!(close(r.max_us, 10_000), "{r}");
    assert!((r.mean_us - 5_000.5).abs() < 10.0, "{r}");
}

#[test]
fn merge_adds_counts_and_samples() {
    let (mut a, mut b) = (Stats::new(), Stats::new());
    a.record(Outcome::Ok, Duration::from_micros(100));
    b.record(Outcome::ToolError, Duration::from_micros(300));
    b.record(Outcome::Failed, Duration::from_secs(3600));
    a.merge(&b);
    assert_eq!((a.calls, a.errors, a.tool_errors), (3, 1, 1));
    let r = Report::new("closed", 2, 1, None, Duration::from_secs(1)).fill(&a);
    // An hour saturates at the histogram's 60 s ceiling instead of being dropped.
    assert!(close(r.max_us, 60_000_000), "{r}");
    assert!(close(r.p50_us, 300), "{r}");
}

/// Walk one open-loop worker through virtual time with the same arithmetic the real worker uses.
fn simulate(rate: f64, n: u64, service: impl Fn(u64) -> Duration) -> (Stats, Stats) {
    let start = Instant::now();
    let schedule = Schedule::new(start, rate);
    let (mut corrected, mut naive) = (Stats::new(), Stats::new());
    let mut free = start;
    for k in 0..n {
        let due = schedule.due(k);
        let sent = free.max(due);
        let (from, late) = measured_from(due, free, sent);
        let done = sent + service(k);
        corrected.record(Outcome::Ok, done - from);
        corrected.late += u64::from(late);
        naive.record(Outcome::Ok, done - sent);
        free = done;
    }
    (corrected, naive)
}

#[test]
fn open_loop_counts_the_calls_a_stall_held_up() {
    // 100 calls/s, 1 ms each, except call 50 (due at 500 ms) which stalls for 500 ms.
    let ms = Duration::from_millis;
    let (corrected, naive) = simulate(100.0, 200, |k| if k == 50 { ms(500) } else { ms(1) });
    let c = Report::new("open", 1, 1, Some(100.0), ms(2000)).fill(&corrected);
    let n = Report::new("open", 1, 1, Some(100.0), ms(2000)).fill(&naive);
    // Calls 51..=105 were due during or just after the stall: call j waits until 1000 + (j - 50) ms.
    assert_eq!(c.late, 55);
    assert!(close(c.p99_us, 482_000), "{c}");
    assert!(close(c.p90_us, 320_000), "{c}");
    assert!(close(c.max_us, 500_000), "{c}");
    // Timing from the actual send hides all of that behind one slow sample.
    assert!(close(n.p99_us, 1_000), "{n}");
    assert!(close(n.max_us, 500_000), "{n}");
}

#[test]
fn open_loop_on_time_measures_service_time() {
    let (corrected, _) = simulate(1000.0, 1000, |_| Duration::from_micros(200));
    let c = Report::new("open", 1, 1, Some(1000.0), Duration::from_secs(1)).fill(&corrected);
    assert_eq!(c.late, 0);
    assert!(close(c.p99_us, 200) && close(c.max_us, 200), "{c}");
}

#[test]
fn finds_responses_in_json_and_sse() {
    let ok = Bytes::from_static(br#"{"jsonrpc":"2.0","id":5,"result":{"content":[],"isError":false}}"#);
    assert_eq!(classify(find_response(&ok, false, &Id::Num(5))), Outcome::Ok);
    assert_eq!(classify(find_response(&ok, false, &Id::Num(6))), Outcome::Failed);
    let sse = Bytes::from_static(
        b"id: 1\ndata:\n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n\
          event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"isError\":true}}\n\n",
    );
    assert_eq!(classify(find_response(&sse, true, &Id::Num(5))), Outcome::ToolError);
    let err = Bytes::from_static(br#"{"jsonrpc":"2.0","id":5,"error":{"code":-32602,"message":"x"}}"#);
    assert_eq!(classify(find_response(&err, false, &Id::Num(5))), Outcome::RpcError);
}

async fn mock(cfg: MockConfig) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", l.local_addr().unwrap());
    tokio::spawn(serve_http(l, cfg));
    url
}

fn quick(url: String) -> LoadConfig {
    LoadConfig {
        url,
        concurrency: 2,
        duration: Duration::from_millis(300),
        warmup: Duration::from_millis(50),
        sessions: 2,
        ..LoadConfig::default()
    }
}

#[tokio::test]
async fn drives_the_mock_closed_and_open_loop() {
    let url = mock(MockConfig::default()).await;
    let r = run(&quick(url.clone())).await.unwrap();
    assert!(r.calls > 10 && r.errors == 0 && r.tool_errors == 0, "{r}");
    assert!(r.all_calls > r.calls, "warmup calls are counted in all_calls: {r}");
    let r = run(&LoadConfig { rate: Some(200.0), ..quick(url) }).await.unwrap();
    // 200/s over a 300 ms window is 60 calls, every one of them sent.
    assert!((59..=61).contains(&r.calls) && r.errors == 0, "{r}");
}

#[tokio::test]
async fn counts_tool_errors_and_rpc_errors() {
    let url = mock(MockConfig { error_rate: 1.0, ..MockConfig::default() }).await;
    let r = run(&quick(url.clone())).await.unwrap();
    assert!(r.calls > 0 && r.tool_errors == r.calls && r.errors == 0, "{r}");
    let r = run(&LoadConfig { tool: "nope".into(), ..quick(url) }).await.unwrap();
    assert!(r.calls > 0 && r.errors == r.calls, "{r}");
}

#[tokio::test]
async fn explains_a_wrong_url() {
    let url = mock(MockConfig::default()).await.replace("/mcp", "/nope");
    let e = run(&quick(url)).await.unwrap_err().to_string();
    assert!(e.contains("HTTP 404") && e.contains("is its MCP endpoint"), "{e}");
}
