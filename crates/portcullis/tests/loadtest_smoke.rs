//! `portcullis loadtest` and `portcullis mock-server` as a user runs them: the smoke scenario (a gateway it starts
//! with a mock upstream, a chaos schedule, two classes) and its `--json`/`--html` output, an SLO failure's exit
//! code, and the mock server's crash exit and config errors.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portcullis"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

#[test]
fn smoke_scenario_reports_and_meets_its_slos() {
    let tmp = tempfile::tempdir().unwrap();
    let html = tmp.path().join("report.html");
    let out = Command::new(exe())
        .args(["loadtest", "--json", "--quiet", "--html"])
        .arg(&html)
        .arg(repo().join("examples/scenarios/smoke.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}\nstdout: {}", String::from_utf8_lossy(&out.stdout));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["scenario"], "smoke");
    let calls = r["calls"].as_u64().unwrap();
    // 60/s + ~30/s for 3 s.
    assert!((150..=400).contains(&calls), "{r}");
    assert!(r["throughput"].as_f64().unwrap() > 40.0, "{r}");
    for key in ["mean", "p50", "p90", "p99", "p999", "max"] {
        assert!(r["latency_ms"][key].as_f64().unwrap() > 0.0, "latency_ms.{key}: {r}");
    }
    for key in ["ok", "errors", "error_rate", "shed", "shed_rate", "late", "all_calls", "window_s"] {
        assert!(r[key].is_number(), "{key}: {r}");
    }
    assert!(r["errors_by_code"].is_object());
    for class in ["interactive", "batch"] {
        let c = &r["classes"][class];
        assert!(c["calls"].as_u64().unwrap() > 0 && c["shed_rate"].is_number(), "{class}: {r}");
    }
    assert!(r["timeline"].as_array().unwrap().len() >= 6, "3 s in 500 ms buckets: {r}");
    let chaos: Vec<&str> = r["chaos"].as_array().unwrap().iter().map(|c| c["what"].as_str().unwrap()).collect();
    assert_eq!(chaos, ["rotate tool lookup of mock mock", "add 5ms to mock mock", "remove added latency of mock mock"]);
    assert_eq!(r["slo"]["pass"], true, "{r}");
    let keys: Vec<&str> = r["slo"]["checks"].as_array().unwrap().iter().map(|c| c["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["p99_ms", "error_rate", "p99_ms"]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("Latency over time") && page.contains("class interactive"));
    assert!(!page.contains("<script") && !page.contains("https://"), "the report must open offline");
}

#[test]
fn a_failed_slo_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = repo().join("examples/scenarios/gateways/one-mock.toml");
    let scenario = tmp.path().join("strict.toml");
    std::fs::write(
        &scenario,
        format!(
            "duration = \"1s\"\n[target]\ngateway_config = {gw:?}\n[[mock]]\nname = \"mock\"\n[[mock.tool]]\n\
             name = \"t\"\nlatency = \"2ms\"\n[[flow]]\nname = \"f\"\narrival = {{ kind = \"constant\", rate = 50 }}\n\
             [[flow.tool]]\nname = \"mock__t\"\n[slo]\np99_ms = 0.001\n"
        ),
    )
    .unwrap();
    let out = Command::new(exe()).args(["loadtest", "--quiet"]).arg(&scenario).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("SLO all p99_ms <= 0.001") && stdout.contains("SLO verdict: FAIL"), "{stdout}");
    // A scenario error is exit 2 with the file and key.
    std::fs::write(&scenario, "duration = \"1s\"\n[target]\n").unwrap();
    let out = Command::new(exe()).args(["loadtest", "--quiet"]).arg(&scenario).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("strict.toml: ") && stderr.contains("flow"), "{stderr}");
}

#[test]
fn mock_server_crashes_with_status_3_and_checks_its_config() {
    let mut child = Command::new(exe())
        .args(["mock-server", "--stdio", "--crash-rate", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"work\"}}\n")
        .unwrap();
    // stdin stays open: the exit is the crash, not EOF.
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));

    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("mock.toml");
    std::fs::write(&cfg, "[[tool]]\nname = \"a\"\nlatency = \"lognormal:p50=5ms\"\n").unwrap();
    let out = Command::new(exe()).args(["mock-server", "--stdio", "--config"]).arg(&cfg).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("mock.toml: tool.latency: lognormal: p99= is missing (line 3)"), "{stderr}");
    let out = Command::new(exe()).args(["mock-server", "--stdio", "--error-rate", "1.5"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--error-rate: 1.5 is not a probability"), "{stderr}");
}
