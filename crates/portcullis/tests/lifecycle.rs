//! Process lifecycle: graceful shutdown, restarts, the child's environment and stderr, startup errors
//! (name collisions, bad config, an upstream that cannot start) and `portcullis check`.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_call_finish_then_exits_clean() {
    let m = marker("graceful");
    let mut gw = Gateway::start("", &raw_upstream("raw", &m, "timeout = \"30s\""));
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    assert!(!processes_with(&m).is_empty());

    let slow = tokio::spawn(async move {
        let t = Instant::now();
        let r = c.call("raw__slow", json!({"ms": 1500})).await;
        (r, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = nix::unistd::Pid::from_raw(gw.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();

    let (r, took) = tokio::time::timeout(Duration::from_secs(10), slow).await.expect("in-flight call hung").unwrap();
    assert_eq!(text_of(&r), "slept 1500", "in-flight call must complete during graceful shutdown: {r}");
    assert!(took >= Duration::from_millis(1400), "{took:?}");

    let status = tokio::task::block_in_place(|| gw.stop());
    assert!(status.success(), "gateway exit status {status}; log:\n{}", gw.plain_log());
    let left = wait_no_processes(&m, Duration::from_secs(5));
    assert!(left.is_empty(), "children left behind: {left:?}");
    let log = gw.plain_log();
    assert!(log.contains("shutting down"), "{log}");
}

#[tokio::test]
async fn crash_restart_is_logged() {
    let m = marker("restartlog");
    let gw = Gateway::start("", &raw_upstream("raw", &m, "timeout = \"30s\""));
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    let r = c.call("raw__crash", json!({})).await;
    assert_eq!(error_code(&r), -32014, "{r}");

    let down = gw
        .wait_log_line(Duration::from_secs(5), |l| l.contains("upstream down") && l.contains("upstream=raw"))
        .unwrap_or_else(|| panic!("no 'upstream down' line; log:\n{}", gw.plain_log()));
    assert!(down.contains("WARN") && down.contains("process exited") && down.contains("retry_in"), "{down}");
    // The restart shows as a second initialization (backoff 200ms).
    let two_inits = || {
        gw.plain_log().lines().filter(|l| l.contains("upstream initialized") && l.contains("upstream=raw")).count() >= 2
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !two_inits() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(two_inits(), "restart not logged; log:\n{}", gw.plain_log());
}

#[tokio::test]
async fn child_environment_is_scrubbed() {
    let m = marker("env");
    let gw = Gateway::start_env(
        "",
        &raw_upstream("raw", &m, "timeout = \"10s\"\nenv = { CONFIGURED = \"yes\" }"),
        &[("PORTCULLIS_TEST_SECRET", "hunter2")],
    );
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    let r = c.call("raw__env", json!({})).await;
    let env: serde_json::Map<String, Value> = serde_json::from_str(&text_of(&r)).unwrap_or_else(|e| panic!("{e}: {r}"));

    assert_eq!(env.get("CONFIGURED"), Some(&json!("yes")), "{env:?}");
    assert!(env.contains_key("PATH"), "{env:?}");
    assert!(env.contains_key("HOME"), "{env:?}");
    assert!(!env.contains_key("PORTCULLIS_TEST_SECRET"), "secret leaked to the child: {env:?}");
    assert!(!text_of(&r).contains("hunter2"), "secret value leaked to the child");

    // Everything else must come from the interpreter launcher, not the gateway's environment:
    // - the gateway passes exactly PATH, HOME, LANG (if set) and the configured CONFIGURED;
    // - `python3` here is a pyenv shim (a bash script running `pyenv exec`): bash adds PWD, SHLVL and `_`,
    //   pyenv adds PYENV_* / _PYENV_* (and rewrites PATH);
    // - CPython's PEP 538 locale coercion adds LC_CTYPE when the locale would be C/POSIX.
    // Observed with `env -i PATH=.. HOME=.. python3 -c 'print(os.environ)'`: exactly those extras.
    let keys: BTreeSet<&str> = env.keys().map(String::as_str).collect();
    let unexpected: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| !matches!(*k, "PATH" | "HOME" | "LANG" | "CONFIGURED"))
        .filter(|k| !matches!(*k, "PWD" | "SHLVL" | "_" | "LC_CTYPE"))
        .filter(|k| !k.starts_with("PYENV_") && !k.starts_with("_PYENV_"))
        .collect();
    assert!(unexpected.is_empty(), "unexpected variables in the child: {unexpected:?} (all: {keys:?})");
    // The test process itself runs with CARGO_* and PORTCULLIS_LOG set; none of it may reach the child.
    assert!(!keys.iter().any(|k| k.starts_with("CARGO") || k.starts_with("PORTCULLIS")), "{keys:?}");
}

#[tokio::test]
async fn child_stderr_goes_to_log_tagged() {
    let m = marker("stderr");
    let gw = Gateway::start("", &raw_upstream("raw", &m, "timeout = \"10s\""));
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    let needle = format!("stderr-line-{}", std::process::id());
    let r = c.call("raw__stderr", json!({"text": needle})).await;
    assert_eq!(text_of(&r), "ok");
    let line = gw
        .wait_log_line(Duration::from_secs(5), |l| l.contains(&needle))
        .unwrap_or_else(|| panic!("child stderr not in the log:\n{}", gw.plain_log()));
    assert!(line.contains("upstream=raw"), "{line}");
}

#[test]
fn name_collision_at_startup_names_both_upstreams() {
    let m = marker("collide");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}{}",
        raw_upstream_args("a_", &m, &["--extra-tool", "_x"], "connect_timeout = \"5s\""),
        raw_upstream_args("a", &m, &["--extra-tool", "__x"], "connect_timeout = \"5s\""),
    );
    let (status, stdout, stderr, _cfg, _dir) = run_cli(&["serve"], &text, Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stdout.contains("Portcullis is listening"), "must not start serving: {stdout}");
    let msg = stderr.lines().find(|l| l.starts_with("portcullis: ")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(msg.contains("a____x"), "{msg}");
    assert!(msg.contains("\"a_\"") && msg.contains("\"a\""), "must name both upstreams: {msg}");
    let left = wait_no_processes(&m, Duration::from_secs(5));
    assert!(left.is_empty(), "children left behind: {left:?}");
}

#[test]
fn check_prints_catalog_or_names_the_bad_key() {
    let m = marker("check");
    let good = format!("[server]\nlisten = \"127.0.0.1:0\"\n{}", raw_upstream("raw", &m, "timeout = \"10s\""));
    let (status, stdout, stderr, cfg, _dir) = run_cli(&["check"], &good, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains(&format!("{}: config OK", cfg.display())), "{stdout}");
    assert!(stdout.contains("/mcp: 17 tools"), "{stdout}");
    for t in ["raw__echo", "raw__crash", "raw__pid", "raw__whoami"] {
        assert!(stdout.lines().any(|l| l.trim() == t), "{t} missing from:\n{stdout}");
    }
    assert!(wait_no_processes(&m, Duration::from_secs(5)).is_empty(), "check must stop its children");

    let bad =
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{}", raw_upstream("raw", &m, "timeout = \"10s\"\nretries = 3"));
    let (status, stdout, stderr, cfg, _dir) = run_cli(&["check"], &bad, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let msg = stderr.lines().find(|l| l.contains("config error")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(msg.contains(&cfg.display().to_string()), "names the file: {msg}");
    assert!(msg.contains("upstream[0]"), "names the key path: {msg}");
    assert!(msg.contains("unknown field") && msg.contains("retries"), "names the reason: {msg}");
    assert!(processes_with(&m).is_empty(), "a bad config starts nothing");
}

#[tokio::test]
async fn required_upstream_that_cannot_start() {
    let m = marker("nostart");
    let body = format!(
        "{}[[upstream]]\nname = \"dead\"\ncommand = [\"/nonexistent\", \"{m}\"]\nconnect_timeout = \"1s\"\n",
        // Startup waits for the *largest* connect_timeout of all required upstreams (main.rs startup_wait), so
        // the healthy one gets a shorter one too, or startup takes the default 30 s + 1 s.
        raw_upstream("raw", &m, "timeout = \"10s\"\nconnect_timeout = \"5s\"")
    );
    let t = Instant::now();
    // Startup waits for the dead upstream until the largest connect_timeout (5 s, +1 s), then serves anyway.
    let gw = Gateway::start("", &body); // returns once the banner is printed
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    // stderr is read by another thread: wait for the line rather than racing it.
    let line = gw.wait_log_line(Duration::from_secs(5), |l| l.contains("\"dead\"") && l.contains("serving without it"));
    assert!(line.is_some(), "{}", gw.plain_log());
    let log = gw.plain_log();

    let admin = gw.admin.clone().unwrap();
    let r = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ready"], json!(false), "{body}");
    let dead = body["upstreams"].as_array().unwrap().iter().find(|u| u["upstream"] == "dead").unwrap().clone();
    assert_ne!(dead["status"], "Ready", "{body}");
    assert!(dead["last_error"].as_str().unwrap().contains("/nonexistent"), "readiness says why: {body}");
    assert!(log.contains("cannot start \"/nonexistent\""), "{log}");
    let h = reqwest::get(format!("{admin}/healthz")).await.unwrap();
    assert_eq!(h.status().as_u16(), 200, "liveness is not readiness");

    // The healthy upstream is served; the dead one has no tools, so calling one looks like any unknown tool.
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    let list = c.request("tools/list", json!({})).await;
    let names: Vec<&str> =
        list["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"raw__echo"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("dead__")), "{names:?}");
    let r = c.call("dead__echo", json!({})).await;
    assert_eq!(error_code(&r), -32602, "{r}");
    assert_eq!(text_of(&c.call("raw__echo", json!({"text": "up"})).await), "up");
}

#[tokio::test]
async fn upstream_ready_before_an_earlier_one_is_usable() {
    // `first` is listed first but starts 1 s late; `second` is ready long before it.
    let m = marker("order");
    let limits = "timeout = \"3s\"\nconnect_timeout = \"4s\"";
    let body = format!(
        "{}{}",
        raw_upstream_delayed("first", &m, "1", &[], limits),
        raw_upstream_args("second", &m, &[], limits)
    );
    let gw = Gateway::start("", &body);
    let admin = gw.admin.clone().unwrap();
    let r = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    let status = r.status().as_u16();
    let ready: Value = r.json().await.unwrap();
    let mut c = Http::new(&gw.mcp(None));
    c.initialize(json!({})).await;
    assert_eq!(text_of(&c.call("first__echo", json!({"text": "1"})).await), "1");
    let r = c.call("second__echo", json!({"text": "2"})).await;
    // Regression guard: before 9e2e428 `second` was never usable: its `Ready` was sent while `wait_initial`
    // (crates/gateway/src/lib.rs) listened only to `first`, and tokio's `watch::Sender::send` drops the value when
    // no receiver exists (Conn::start dropped the initial receiver), so it stayed `Starting`: the call failed with
    // -32014 "still initializing" after its timeout and /readyz stayed 503.
    assert_eq!(text_of(&r), "2", "{r}\nlog:\n{}", gw.plain_log());
    assert_eq!(status, 200, "/readyz: {ready}");
    assert!(!gw.plain_log().contains("did not initialize"), "{}", gw.plain_log());
}
