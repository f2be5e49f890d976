//! The mock's faults: latency distributions, seeded determinism, crash, hang, error rates, list_changed on a
//! schedule, slow drip, the chaos control endpoint, and the TOML config's errors.

use super::super::*;
use super::{reply, req};
use futures::StreamExt;
use std::time::Instant;

fn tool(name: &str) -> ToolSpec {
    ToolSpec::new(name)
}

fn spec(tools: Vec<ToolSpec>) -> MockSpec {
    MockSpec { seed: 1, list_changed_every: None, crash_mode: CrashMode::Exit, tools }
}

fn call(id: i64, name: &str) -> Message {
    req(id, "tools/call", &format!(r#"{{"name":"{name}","arguments":{{"text":"x"}}}}"#))
}

#[test]
fn latency_text_forms_and_errors() {
    let ms = Duration::from_millis;
    assert_eq!(Latency::parse("5ms"), Ok(Latency::Fixed(ms(5))));
    assert_eq!(Latency::parse("uniform:1ms..9ms"), Ok(Latency::Uniform { min: ms(1), max: ms(9) }));
    assert_eq!(Latency::parse("lognormal:p99=50ms,p50=5ms"), Ok(Latency::LogNormal { p50: ms(5), p99: ms(50) }));
    assert_eq!(Latency::parse("exp:mean=2ms"), Ok(Latency::Exponential { mean: ms(2) }));
    let err = |s: &str| Latency::parse(s).unwrap_err();
    assert!(err("gauss:p50=1ms").contains("unknown distribution \"gauss\""));
    assert!(err("normal:p50=5ms").contains("p99= is missing"));
    assert!(err("normal:p50=5ms,p99=1ms").contains("p99 is smaller than p50"));
    assert!(err("uniform:9ms..1ms").contains("MIN is larger than MAX"));
    assert!(err("fast").contains("is not a duration"));
}

fn quantiles(l: &Latency, n: usize) -> (f64, f64) {
    let mut rng = StdRng::seed_from_u64(3);
    let mut v: Vec<f64> = (0..n).map(|_| l.sample(&mut rng).as_secs_f64() * 1000.0).collect();
    v.sort_by(f64::total_cmp);
    (v[n / 2], v[n * 99 / 100])
}

#[test]
fn latency_samples_hit_their_percentiles() {
    let near = |got: f64, want: f64, tol: f64| (got - want).abs() <= want * tol;
    let (p50, p99) = quantiles(&Latency::parse("lognormal:p50=5ms,p99=50ms").unwrap(), 40_000);
    assert!(near(p50, 5.0, 0.05) && near(p99, 50.0, 0.10), "lognormal p50 {p50} p99 {p99}");
    let (p50, p99) = quantiles(&Latency::parse("normal:p50=10ms,p99=20ms").unwrap(), 40_000);
    assert!(near(p50, 10.0, 0.03) && near(p99, 20.0, 0.05), "normal p50 {p50} p99 {p99}");
    let (p50, p99) = quantiles(&Latency::parse("uniform:10ms..20ms").unwrap(), 40_000);
    assert!(near(p50, 15.0, 0.03) && near(p99, 19.9, 0.02), "uniform p50 {p50} p99 {p99}");
    let (p50, _) = quantiles(&Latency::parse("exp:mean=10ms").unwrap(), 40_000);
    assert!(near(p50, 10.0 * std::f64::consts::LN_2, 0.05), "exp median {p50}");
}

/// What the n-th call of `name` does, as text.
fn outcome(m: &Mock, id: i64, name: &str) -> String {
    match m.plan(call(id, name)) {
        Plan::Crash => "crash".into(),
        Plan::Hang => "hang".into(),
        Plan::Drop => "drop".into(),
        Plan::Nothing => "nothing".into(),
        Plan::Reply(r) => format!("reply {}", r.to_json()),
        Plan::Call(c) => {
            let kind = match &c.reply {
                Message::Error { .. } => "rpc-error",
                r if r.to_json().contains(r#""isError":true"#) => "tool-error",
                _ => "ok",
            };
            format!("{kind} {}us", c.latency.as_micros())
        }
    }
}

fn faulty(seed: u64) -> Mock {
    let a = ToolSpec {
        latency: Latency::parse("lognormal:p50=2ms,p99=30ms").unwrap(),
        error_rate: 0.2,
        rpc_error_rate: 0.1,
        crash_rate: 0.05,
        hang_rate: 0.1,
        ..tool("a")
    };
    let b = ToolSpec { latency: Latency::parse("uniform:1ms..2ms").unwrap(), error_rate: 0.5, ..tool("b") };
    Mock::from_spec(MockSpec { seed, ..spec(vec![a, b]) })
}

#[test]
fn same_seed_same_outcomes_call_by_call_per_tool() {
    let run = |m: &Mock, interleave: bool| -> Vec<String> {
        (0..400)
            .map(|i| {
                if interleave && i % 3 == 0 {
                    outcome(m, 10_000 + i, "b");
                }
                outcome(m, i, "a")
            })
            .collect()
    };
    let first = run(&faulty(9), false);
    assert_eq!(first, run(&faulty(9), false));
    // Calls to another tool in between do not shift this tool's draws.
    assert_eq!(first, run(&faulty(9), true));
    assert_ne!(first, run(&faulty(10), false));
    let count = |k: &str| first.iter().filter(|o| o.starts_with(k)).count();
    // 400 calls: crash 5 %, hang 10 %, rpc-error 10 %, tool-error 20 %.
    assert!((8..=35).contains(&count("crash")), "{}", count("crash"));
    assert!((20..=60).contains(&count("hang")), "{}", count("hang"));
    assert!((20..=60).contains(&count("rpc-error")), "{}", count("rpc-error"));
    assert!((50..=110).contains(&count("tool-error")), "{}", count("tool-error"));
}

#[tokio::test]
async fn rpc_error_rate_gives_internal_errors() {
    let m = Mock::from_spec(spec(vec![ToolSpec { rpc_error_rate: 1.0, ..tool("t") }]));
    let r = reply(&m, call(4, "t")).await;
    assert_eq!(r["id"], 4);
    assert_eq!(r["error"]["code"], code::INTERNAL_ERROR);
    assert_eq!(r["error"]["message"], "injected error (mock rpc_error_rate)");
}

#[tokio::test]
async fn stdio_crash_ends_the_session_at_once() {
    let s = spec(vec![tool("ok"), ToolSpec { crash_rate: 1.0, ..tool("boom") }]);
    let (client, server_io) = tokio::io::duplex(1 << 16);
    let (server_in, server_out) = tokio::io::split(server_io);
    let server = tokio::spawn(stdio::serve(s, server_in, server_out));
    use tokio::io::AsyncWriteExt;
    let (_read, mut write) = tokio::io::split(client);
    let calls = format!("{}\n{}\n", call(1, "ok").to_json(), call(2, "boom").to_json());
    write.write_all(calls.as_bytes()).await.unwrap();
    // stdin stays open: the session ends because of the crash, not because of EOF.
    let end = tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
    assert_eq!(end, stdio::End::Crash);
}

#[tokio::test(start_paused = true)]
async fn stdio_sends_list_changed_on_schedule() {
    let s = MockSpec { list_changed_every: Some(Duration::from_secs(2)), ..spec(vec![tool("t")]) };
    let (client, server_io) = tokio::io::duplex(1 << 16);
    let (server_in, server_out) = tokio::io::split(server_io);
    let _server = tokio::spawn(stdio::serve(s, server_in, server_out));
    use tokio::io::AsyncBufReadExt;
    let (read, _write) = tokio::io::split(client);
    let mut lines = tokio::io::BufReader::new(read).lines();
    let t0 = tokio::time::Instant::now();
    for k in 1..=3u64 {
        let line = lines.next_line().await.unwrap().unwrap();
        assert_eq!(line, r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#);
        assert_eq!(t0.elapsed(), Duration::from_secs(2 * k));
    }
}

/// Serve `s` over HTTP with the control endpoint; return the base URL and an open session id.
async fn http(s: MockSpec) -> (String, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(serve_http_spec(l, s, true));
    let resp = post(&base, None, &req(0, "initialize", "{}").to_json()).await.unwrap();
    let sid = resp.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    (base, sid)
}

async fn post(base: &str, sid: Option<&str>, body: &str) -> reqwest::Result<reqwest::Response> {
    let mut rb = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_owned());
    if let Some(s) = sid {
        rb = rb.header("mcp-session-id", s);
    }
    rb.send().await
}

async fn control(base: &str, body: &str) -> serde_json::Value {
    let r = reqwest::Client::new().post(format!("{base}/control")).body(body.to_owned()).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn http_crash_in_drop_mode_drops_the_connection() {
    let s = MockSpec { crash_mode: CrashMode::Drop, ..spec(vec![ToolSpec { crash_rate: 1.0, ..tool("boom") }]) };
    let (base, sid) = http(s).await;
    let got = match post(&base, Some(&sid), &call(1, "boom").to_json()).await {
        Ok(r) => r.bytes().await.map(|b| String::from_utf8_lossy(&b).into_owned()),
        Err(e) => Err(e),
    };
    assert!(got.is_err(), "a dropped connection gives no complete response: {got:?}");
    // The server is still up.
    assert!(post(&base, Some(&sid), &req(2, "ping", "{}").to_json()).await.unwrap().status().is_success());
}

#[tokio::test]
async fn hang_never_answers_and_the_switch_hangs_everything() {
    let (base, sid) = http(spec(vec![ToolSpec { hang_rate: 1.0, ..tool("stuck") }, tool("fine")])).await;
    let wait = Duration::from_millis(300);
    assert!(tokio::time::timeout(wait, post(&base, Some(&sid), &call(1, "stuck").to_json())).await.is_err());
    assert!(post(&base, Some(&sid), &call(2, "fine").to_json()).await.unwrap().status().is_success());
    control(&base, r#"{"hang":true}"#).await;
    assert!(tokio::time::timeout(wait, post(&base, Some(&sid), &call(3, "fine").to_json())).await.is_err());
    control(&base, r#"{"hang":false,"add_latency_ms":50}"#).await;
    let t0 = Instant::now();
    assert!(post(&base, Some(&sid), &call(4, "fine").to_json()).await.unwrap().status().is_success());
    assert!(t0.elapsed() >= Duration::from_millis(50));
}

#[tokio::test]
async fn rotate_changes_the_description_and_reaches_the_get_stream() {
    let (base, sid) = http(spec(vec![ToolSpec { description: Some("Search.".into()), ..tool("search") }])).await;
    let get = reqwest::Client::new().get(format!("{base}/mcp")).header("mcp-session-id", &sid).send().await.unwrap();
    assert_eq!(get.headers()["content-type"], "text/event-stream");
    let mut events = get.bytes_stream();
    let first = events.next().await.unwrap().unwrap();
    assert!(first.starts_with(b": stream open"), "{first:?}");
    let done = control(&base, r#"{"rotate":"search"}"#).await;
    assert_eq!(done["done"], "rotated search to revision 1");
    let ev = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap().unwrap();
    assert!(String::from_utf8_lossy(&ev).contains("notifications/tools/list_changed"), "{ev:?}");
    let list = post(&base, Some(&sid), &req(5, "tools/list", "{}").to_json()).await.unwrap();
    let list: serde_json::Value = serde_json::from_slice(&list.bytes().await.unwrap()).unwrap();
    assert_eq!(list["result"]["tools"][0]["description"], "Search. (revision 1)");
    let r = reqwest::Client::new().post(format!("{base}/control")).body(r#"{"rotate":"nope"}"#).send().await;
    assert_eq!(r.unwrap().status(), 400);
}

#[tokio::test]
async fn http_list_changed_schedule_reaches_the_get_stream() {
    let s = MockSpec { list_changed_every: Some(Duration::from_millis(100)), ..spec(vec![tool("t")]) };
    let (base, sid) = http(s).await;
    let get = reqwest::Client::new().get(format!("{base}/mcp")).header("mcp-session-id", &sid).send().await.unwrap();
    let mut events = get.bytes_stream();
    let mut seen = 0;
    while seen < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap().unwrap();
        seen += String::from_utf8_lossy(&ev).matches("list_changed").count();
    }
}

#[tokio::test]
async fn slow_drip_streams_progress_between_pauses() {
    let drip = ToolSpec { latency: Latency::Fixed(Duration::from_millis(400)), progress: 3, drip: true, ..tool("d") };
    let (base, sid) = http(spec(vec![drip])).await;
    let body = req(1, "tools/call", r#"{"name":"d","_meta":{"progressToken":"tok"}}"#).to_json();
    let t0 = Instant::now();
    let resp = post(&base, Some(&sid), &body).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut chunks = resp.bytes_stream();
    let mut got = Vec::new();
    while let Some(c) = chunks.next().await {
        got.push((t0.elapsed(), String::from_utf8_lossy(&c.unwrap()).into_owned()));
    }
    let text: String = got.iter().map(|g| g.1.as_str()).collect();
    for i in 1..=3 {
        assert!(text.contains(&format!(r#""progressToken":"tok","progress":{i},"total":3"#)), "{text}");
    }
    assert!(text.contains(r#""id":1,"result""#), "{text}");
    // The first progress event arrives well before the answer, which takes the whole latency.
    assert!(got[0].0 < Duration::from_millis(300), "{got:?}");
    assert!(got.last().unwrap().0 >= Duration::from_millis(400), "{got:?}");
    // Without a progress token the pauses are SSE comments.
    let resp = post(&base, Some(&sid), &call(2, "d").to_json()).await.unwrap();
    let text = String::from_utf8_lossy(&resp.bytes().await.unwrap()).into_owned();
    assert_eq!(text.matches(": drip").count(), 3, "{text}");
}

#[test]
fn toml_config_is_strict_and_names_file_and_key() {
    let ok =
        "seed = 5\nlist_changed_every = \"10s\"\n[[tool]]\nname = \"a\"\nlatency = \"lognormal:p50=1ms,p99=9ms\"\n\
              error_rate = 0.1\nprogress = 2\n";
    let s = MockSpec::from_toml(ok, "m.toml").unwrap();
    assert_eq!((s.seed, s.tools[0].progress), (5, 2));
    assert_eq!(s.list_changed_every, Some(Duration::from_secs(10)));
    let err = |t: &str| MockSpec::from_toml(t, "m.toml").unwrap_err();
    let e = err("[[tool]]\nname = \"a\"\nlatncy = \"1ms\"\n");
    assert!(e.starts_with("m.toml: tool.latncy: unknown field `latncy`") && e.ends_with("(line 3)"), "{e}");
    let e = err("[[tool]]\nname = \"a\"\nlatency = \"gauss:p50=1ms\"\n");
    assert!(e.starts_with("m.toml: tool.latency: unknown distribution \"gauss\""), "{e}");
    assert_eq!(
        err("[[tool]]\nname = \"a\"\n[[tool]]\nname = \"b\"\nhang_rate = 2.0\n"),
        "m.toml: tool[1].hang_rate: 2 is not a probability; use a number from 0 to 1"
    );
    assert_eq!(
        err("[[tool]]\nname = \"a\"\n[[tool]]\nname = \"a\"\n"),
        "m.toml: tool[1].name: \"a\" is declared twice"
    );
    assert_eq!(err("seed = 1\n"), "m.toml: tool: no [[tool]] entries; declare at least one tool");
}
