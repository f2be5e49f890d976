use super::client::classify;
use super::report::Point;
use super::scenario::SloSpec;
use super::*;
use bytes::Bytes;
use std::collections::BTreeMap;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn spec(toml_text: &str) -> ArrivalSpec {
    toml::from_str::<BTreeMap<String, ArrivalSpec>>(&format!("a = {toml_text}")).unwrap().remove("a").unwrap()
}

#[test]
fn constant_arrivals_are_evenly_spaced() {
    let a: Vec<_> = ArrivalSpec::constant(100.0).arrivals(Duration::from_secs(2), 0).collect();
    assert_eq!(a.len(), 200);
    assert_eq!(a[0], Duration::ZERO);
    assert!((secs(a[1]) - 0.01).abs() < 1e-9 && (secs(a[199]) - 1.99).abs() < 1e-6);
}

#[test]
fn poisson_arrivals_average_the_rate_and_repeat_per_seed() {
    let s = spec(r#"{ kind = "poisson", rate = 1000 }"#);
    let a: Vec<_> = s.arrivals(Duration::from_secs(10), 7).collect();
    assert!((9_700..=10_300).contains(&a.len()), "{}", a.len());
    assert_eq!(a, s.arrivals(Duration::from_secs(10), 7).collect::<Vec<_>>());
    assert_ne!(a, s.arrivals(Duration::from_secs(10), 8).collect::<Vec<_>>());
    // Exponential gaps: about 63 % are shorter than the mean.
    let short = a.windows(2).filter(|w| secs(w[1] - w[0]) < 0.001).count() as f64 / a.len() as f64;
    assert!((0.60..0.66).contains(&short), "{short}");
}

#[test]
fn step_and_spike_change_the_rate_on_time() {
    let s = spec(r#"{ kind = "step", rate = 10, steps = [{ at = "1s", rate = 100 }, { at = "2s", rate = 0 }] }"#);
    let a: Vec<_> = s.arrivals(Duration::from_secs(3), 0).collect();
    assert_eq!(a.len(), 10 + 100);
    assert!(a.iter().all(|t| secs(*t) < 2.0));
    let s = spec(r#"{ kind = "spike", rate = 10, spike_rate = 500, spike_at = "1s", spike_for = "500ms" }"#);
    let a: Vec<_> = s.arrivals(Duration::from_secs(3), 0).collect();
    let in_spike = a.iter().filter(|t| (1.0..1.5).contains(&secs(**t))).count();
    assert_eq!(in_spike, 250);
    assert_eq!(a.len(), 250 + 25);
    let bad = spec(r#"{ kind = "spike", rate = 10 }"#).check().unwrap_err();
    assert_eq!(bad.0, "spike_rate");
}

fn sample(class: usize, due_ms: u64, latency_us: u64, outcome: Outcome) -> Sample {
    let (due, latency) = (Duration::from_millis(due_ms), Duration::from_micros(latency_us));
    Sample { class, due, latency, outcome, late: false }
}

#[test]
fn tally_counts_errors_sheds_and_percentiles_per_class() {
    let mut t =
        Tally::new(vec!["interactive".into(), "batch".into()], Duration::from_millis(100), Duration::from_secs(1));
    // Warmup: counted in all_calls only.
    t.record(&sample(0, 50, 99_000, Outcome::Timeout));
    for i in 0..1000u64 {
        t.record(&sample(0, 100 + i, 1000 + i, Outcome::Ok));
    }
    let sheds = [Outcome::Rpc(-32012), Outcome::Rpc(-32011), Outcome::Http(429), Outcome::Http(503)];
    for (i, o) in sheds.into_iter().enumerate() {
        t.record(&sample(1, 1500 + i as u64, 200, o));
    }
    for o in [Outcome::Rpc(-32014), Outcome::ToolError, Outcome::Transport, Outcome::Timeout, Outcome::Ok, Outcome::Ok]
    {
        t.record(&sample(1, 1600, 300, o));
    }
    let r = t.report("t", Duration::from_secs(2), None, Vec::new());
    assert_eq!((r.all_calls, r.all.calls, r.all.ok), (1011, 1010, 1002));
    assert_eq!((r.all.errors, r.all.shed), (8, 4));
    assert_eq!(r.all.throughput, 505.0);
    let i = &r.classes["interactive"];
    assert_eq!((i.calls, i.errors, i.shed, i.shed_rate), (1000, 0, 0, 0.0));
    assert!((i.latency_ms.p50 - 1.5).abs() < 0.01 && (i.latency_ms.p99 - 1.99).abs() < 0.01, "{:?}", i.latency_ms);
    let b = &r.classes["batch"];
    assert_eq!((b.calls, b.ok, b.shed), (10, 2, 4));
    assert_eq!((b.shed_rate, b.error_rate), (0.4, 0.8));
    let codes: Vec<(&str, u64)> = r.errors_by_code.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        codes,
        [
            ("-32011", 1),
            ("-32012", 1),
            ("-32014", 1),
            ("http 429", 1),
            ("http 503", 1),
            ("isError", 1),
            ("timeout", 1),
            ("transport", 1)
        ]
    );
    // Timeline: bucket 0 holds the 900 calls due in [0.1 s, 1 s), bucket 1 the rest.
    let calls: Vec<u64> = r.timeline.iter().map(|p: &Point| p.calls).collect();
    assert_eq!(calls, [900, 110]);
    assert_eq!((r.timeline[1].errors, r.timeline[1].shed), (8, 4));
}

/// One slot (max_in_flight = 1), 100 calls/s, 1 ms each, except call 50, which stalls for 500 ms: the calls due
/// during the stall are timed from when they were due.
#[test]
fn tally_keeps_the_latency_of_calls_held_up_by_a_stall() {
    let start = Instant::now();
    let mut t = Tally::new(vec!["c".into()], Duration::ZERO, Duration::from_secs(1));
    let mut free = start;
    for (k, off) in ArrivalSpec::constant(100.0).arrivals(Duration::from_secs(2), 0).enumerate() {
        let due = start + off;
        let sent = free.max(due);
        let (from, late) = measured_from(due, free, sent);
        let done = sent + Duration::from_millis(if k == 50 { 500 } else { 1 });
        t.record(&Sample { class: 0, due: off, latency: done - from, outcome: Outcome::Ok, late });
        free = done;
    }
    let r = t.report("stall", Duration::from_secs(2), None, Vec::new());
    assert_eq!(r.late, 55);
    let near = |got: f64, want: f64| (got - want).abs() <= want * 0.01;
    assert!(near(r.all.latency_ms.p99, 482.0) && near(r.all.latency_ms.max, 500.0), "{:?}", r.all.latency_ms);
    assert!(near(r.all.latency_ms.p90, 320.0), "{:?}", r.all.latency_ms);
}

fn slo(text: &str) -> SloSpec {
    toml::from_str(text).unwrap()
}

#[test]
fn slo_verdicts() {
    let mut t = Tally::new(vec!["a".into(), "b".into()], Duration::ZERO, Duration::from_secs(1));
    for i in 0..100 {
        let o = if i < 2 { Outcome::Rpc(-32012) } else { Outcome::Ok };
        t.record(&sample(0, i, 10_000, o));
    }
    let r = |s: &SloSpec| t.report("s", Duration::from_secs(1), Some(s), Vec::new()).slo;
    let v = r(&slo("p99_ms = 11\nerror_rate = 0.05\nshed_rate = 0.02\nmin_throughput = 100"));
    assert!(v.pass && v.checks.len() == 4, "{v:?}");
    let v = r(&slo("p99_ms = 9\nerror_rate = 0.01\nmin_throughput = 101"));
    let failed: Vec<&str> = v.checks.iter().filter(|c| !c.pass).map(|c| c.key.as_str()).collect();
    assert_eq!(failed, ["p99_ms", "error_rate", "min_throughput"]);
    assert!(!v.pass);
    // A class with no calls fails its limits: it cannot show it met them.
    let v = r(&slo("[class.b]\np99_ms = 100\n"));
    assert!(!v.pass && v.checks[0].scope == "class b" && v.checks[0].actual.is_none(), "{v:?}");
    let v = t.report("s", Duration::from_secs(1), None, Vec::new()).slo;
    assert!(v.pass && v.checks.is_empty());
}

#[test]
fn classifies_replies_and_sheds() {
    let b = |s: &'static str| Bytes::from_static(s.as_bytes());
    assert_eq!(classify(200, &b(r#"{"jsonrpc":"2.0","id":3,"result":{"isError":false}}"#), false, 3), Outcome::Ok);
    assert_eq!(
        classify(200, &b(r#"{"jsonrpc":"2.0","id":3,"result":{"isError":true}}"#), false, 3),
        Outcome::ToolError
    );
    let e = r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32014,"message":"down"}}"#;
    assert_eq!(classify(200, &b(e), false, 3), Outcome::Rpc(-32014));
    let shed = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32012,"message":"overloaded"}}"#;
    assert_eq!(classify(503, &b(shed), false, 3), Outcome::Rpc(-32012));
    assert!(classify(503, &b(shed), false, 3).is_shed());
    assert_eq!(classify(429, &b("slow down"), false, 3), Outcome::Http(429));
    assert!(Outcome::Http(429).is_shed() && Outcome::Http(503).is_shed() && !Outcome::Http(500).is_shed());
    assert!(!Outcome::Rpc(-32014).is_shed());
    assert_eq!(classify(200, &b("garbage"), false, 3), Outcome::Transport);
    let sse = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n\n";
    assert_eq!(classify(200, &b(sse), true, 3), Outcome::Ok);
}

const MINIMAL: &str = r#"
duration = "2s"
[target]
url = "http://127.0.0.1:1/mcp"
[[flow]]
name = "f"
arrival = { kind = "constant", rate = 10 }
[[flow.tool]]
name = "echo"
"#;

#[test]
fn scenario_errors_name_the_file_and_key() {
    let s = Scenario::parse(MINIMAL, "s.toml").unwrap();
    assert_eq!((s.flows[0].class.as_str(), s.flows[0].sessions, s.timeout), ("default", 1, Duration::from_secs(10)));
    let err = |extra: &str| Scenario::parse(&format!("{MINIMAL}{extra}"), "s.toml").unwrap_err();
    let e = err("weight = -1\n");
    assert_eq!(e, "s.toml: flow[0].tool[0].weight: must be a positive number");
    let e = Scenario::parse(&MINIMAL.replace("duration", "duraton"), "s.toml").unwrap_err();
    assert!(e.starts_with("s.toml: duraton: unknown field `duraton`"), "{e}");
    let e =
        Scenario::parse(&MINIMAL.replace("name = \"f\"", "name = \"f\"\nprincipal = \"bob\""), "s.toml").unwrap_err();
    assert_eq!(e, "s.toml: flow[0].principal: no [[principal]] named \"bob\"");
    let e = err("[[chaos]]\nat = \"1s\"\naction = \"kill\"\nmock = \"up\"\n");
    assert_eq!(e, "s.toml: chaos[0].mock: no [[mock]] named \"up\"");
    let e = err("[[mock]]\nname = \"up\"\n[[mock.tool]]\nname = \"t\"\nlatency = \"soon\"\n");
    assert!(e.starts_with("s.toml: mock[0]: mock[0] (up): tool.latency: \"soon\" is not a duration"), "{e}");
    let e = err("[[mock]]\nname = \"up\"\n[[mock.tool]]\nname = \"t\"\n[[chaos]]\nat = \"1s\"\naction = \"rotate\"\nmock = \"up\"\ntool = \"x\"\n");
    assert_eq!(e, "s.toml: chaos[0].tool: mock \"up\" has no tool \"x\"");
    let e = err("[slo]\np99 = 5\n");
    assert!(e.contains("slo.p99: unknown field `p99`"), "{e}");
}

#[tokio::test]
async fn runs_a_scenario_against_a_running_server() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", l.local_addr().unwrap());
    tokio::spawn(crate::mock::serve_http(l, crate::mock::MockConfig { error_rate: 0.5, ..Default::default() }));
    let text = format!(
        "duration = \"500ms\"\n[target]\nurl = \"{url}\"\n\
         [[flow]]\nname = \"a\"\nclass = \"interactive\"\nsessions = 2\narrival = {{ kind = \"constant\", rate = 200 }}\n\
         [[flow.tool]]\nname = \"echo\"\nweight = 3\n[[flow.tool]]\nname = \"nope\"\n\
         [[flow]]\nname = \"b\"\nclass = \"batch\"\narrival = {{ kind = \"poisson\", rate = 100 }}\n[[flow.tool]]\nname = \"work\"\n\
         [slo]\nerror_rate = 0.01\n"
    );
    let sc = Scenario::parse(&text, "inline.toml").unwrap();
    let r = run(&sc, &Options { exe: "/nonexistent".into(), progress: false }).await.unwrap();
    assert_eq!(r.classes["interactive"].calls, 100);
    assert!(r.classes["batch"].calls > 20, "{:?}", r.classes["batch"]);
    assert!(r.errors_by_code["-32602"] > 5, "unknown tool: {:?}", r.errors_by_code);
    assert!(r.errors_by_code["isError"] > 5, "{:?}", r.errors_by_code);
    assert!(!r.slo.pass);
    let html = html::render(&r);
    assert!(html.contains("<svg") && html.contains("class interactive") && !html.contains("<script"), "{html}");
}

#[test]
fn shipped_scenarios_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let s = Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
            assert!(s.dir.join(s.target.gateway_config.as_ref().unwrap()).exists(), "{}", p.display());
            names.push(s.name());
        }
    }
    names.sort();
    assert_eq!(names, ["noisy-neighbour", "rug-pull", "smoke", "spike", "steady", "upstream-crash"]);
}
