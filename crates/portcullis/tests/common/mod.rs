//! Shared harness for end-to-end tests: start the real `portcullis` binary on a temp config with
//! `127.0.0.1:0` ports, drive it with the real Python/TypeScript SDK clients or raw HTTP, stop it with SIGTERM.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portcullis"))
}

pub fn python() -> String {
    repo_root().join(".venv/bin/python").display().to_string()
}

/// A unique marker to find the processes a test started (and any it left behind).
pub fn marker(tag: &str) -> String {
    format!("pcmark-{tag}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish() % 1_000_000_007
}

/// `[[upstream]]` for the hand-written raw stdio server.
pub fn raw_upstream(name: &str, marker: &str, extra: &str) -> String {
    let script = repo_root().join("tests/fixtures/raw_stdio_server.py");
    format!(
        "[[upstream]]\nname = \"{name}\"\ncommand = [\"python3\", \"{}\", \"--marker\", \"{marker}\"]\nclient_requests = [\"sampling\", \"elicitation\", \"roots\"]\n{extra}\n",
        script.display()
    )
}

pub fn everything_upstream(name: &str) -> String {
    let bin = repo_root().join("tests/peers/node_modules/.bin/mcp-server-everything");
    format!(
        "[[upstream]]\nname = \"{name}\"\ncommand = [\"node\", \"{}\", \"stdio\"]\nclient_requests = [\"sampling\", \"elicitation\", \"roots\"]\n",
        bin.display()
    )
}

pub struct Gateway {
    child: Option<Child>,
    pub url: String,
    pub admin: Option<String>,
    pub log: Arc<Mutex<String>>,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Start `portcullis serve` with `[server]` keys `server_extra` plus the rest of the config `body`.
    pub fn start(server_extra: &str, body: &str) -> Gateway {
        Self::start_env(server_extra, body, &[])
    }

    pub fn start_env(server_extra: &str, body: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("portcullis.toml");
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n{server_extra}\n{body}"
        );
        std::fs::write(&config, text).unwrap();
        let mut gw = Self::start_file(&config, env);
        gw._dir = dir;
        gw
    }

    pub fn mcp(&self, topic: Option<&str>) -> String {
        match topic {
            Some(t) => format!("{}/mcp/{t}", self.url),
            None => format!("{}/mcp", self.url),
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM and wait for exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("already stopped");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("gateway did not exit within 30s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Pids of live processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // Zombies (state Z) are dead; only count running processes.
        let zombie = stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmd).contains(marker) {
            out.push(pid);
        }
    }
    out
}

/// Wait until no process carries `marker` (children are reaped asynchronously); returns the leftovers.
pub fn wait_no_processes(marker: &str, within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let left = processes_with(marker);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run the Python SDK driver (`tests/clients/py_client.py`); returns its JSON report.
pub fn py_client(transport: &str, target: &str, mode: &str, steps: &Value) -> Value {
    let out = Command::new(python())
        .current_dir(repo_root())
        .args(["tests/clients/py_client.py", "--transport", transport, "--target", target, "--mode", mode])
        .args(["--timeout", "60"])
        .arg(steps.to_string())
        .output()
        .unwrap();
    parse_report("py_client", &out)
}

/// Run the TypeScript SDK v1 driver (`tests/clients/ts_client.mjs`).
pub fn ts_client(transport: &str, target: &str, steps: &Value) -> Value {
    let out = Command::new("node")
        .current_dir(repo_root())
        .args(["tests/clients/ts_client.mjs", "--transport", transport, "--target", target, "--timeout", "60"])
        .arg(steps.to_string())
        .output()
        .unwrap();
    parse_report("ts_client", &out)
}

fn parse_report(who: &str, out: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{who} printed no JSON report ({e}); stdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["ok"], json!(true), "{who} failed: {v}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    v
}

/// The stdio command line for a client to launch the gateway.
pub fn stdio_target(config: &Path, topic: Option<&str>) -> String {
    let mut cmd = vec![bin().display().to_string(), "stdio".into(), "-c".into(), config.display().to_string()];
    if let Some(t) = topic {
        cmd.push("--topic".into());
        cmd.push(t.into());
    }
    serde_json::to_string(&cmd).unwrap()
}

/// A minimal session-era client over raw HTTP, for protocol-level assertions.
pub struct Http {
    pub client: reqwest::Client,
    pub url: String,
    pub session: Option<String>,
    next_id: i64,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Every JSON-RPC message in an SSE body (or the single JSON body).
    pub fn messages(&self) -> Vec<Value> {
        let ct = self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        if !ct.starts_with("text/event-stream") {
            return vec![self.json()];
        }
        sse_messages(&self.body)
    }
}

pub fn sse_messages(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|ev| {
            let data: Vec<&str> = ev.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
            let data = data.join("\n");
            (!data.trim().is_empty()).then(|| serde_json::from_str(&data).unwrap())
        })
        .collect()
}

impl Http {
    pub fn new(url: &str) -> Http {
        Http { client: reqwest::Client::new(), url: url.to_owned(), session: None, next_id: 0 }
    }

    pub async fn raw(&self, method: reqwest::Method, body: Option<String>, headers: &[(&str, &str)]) -> Reply {
        let mut rb = self.client.request(method, &self.url);
        let mut has_accept = false;
        let mut has_ct = false;
        for (k, v) in headers {
            has_accept |= k.eq_ignore_ascii_case("accept");
            has_ct |= k.eq_ignore_ascii_case("content-type");
            rb = rb.header(*k, *v);
        }
        if !has_accept {
            rb = rb.header("accept", "application/json, text/event-stream");
        }
        if let Some(b) = body {
            if !has_ct {
                rb = rb.header("content-type", "application/json");
            }
            rb = rb.body(b);
        }
        if let Some(s) = &self.session {
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("mcp-session-id")) {
                rb = rb.header("mcp-session-id", s);
            }
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        Reply { status, headers, body }
    }

    pub async fn post(&self, body: &Value) -> Reply {
        self.raw(reqwest::Method::POST, Some(body.to_string()), &[]).await
    }

    /// initialize + initialized; remembers the session id.
    pub async fn initialize(&mut self, capabilities: Value) -> Value {
        let id = self.bump();
        let r = self
            .post(&json!({"jsonrpc":"2.0","id":id,"method":"initialize","params":{
                "protocolVersion":"2025-11-25","capabilities":capabilities,"clientInfo":{"name":"e2e","version":"0"}}}))
            .await;
        assert_eq!(r.status, 200, "initialize: {}", r.body);
        self.session = Some(r.headers.get("mcp-session-id").expect("session id").to_str().unwrap().to_owned());
        let result = r.messages().pop().unwrap();
        let n = self.post(&json!({"jsonrpc":"2.0","method":"notifications/initialized"})).await;
        assert_eq!(n.status, 202);
        result
    }

    pub fn bump(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// Send a request and return the final response message (the one carrying our id).
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.bump();
        let r = self.post(&json!({"jsonrpc":"2.0","id":id,"method":method,"params":params})).await;
        assert_eq!(r.status, 200, "{method}: {}", r.body);
        r.messages().into_iter().find(|m| m["id"] == json!(id)).unwrap_or_else(|| panic!("no response in {}", r.body))
    }

    pub async fn call(&mut self, tool: &str, args: Value) -> Value {
        self.request("tools/call", json!({"name": tool, "arguments": args})).await
    }
}

pub fn text_of(resp: &Value) -> String {
    resp["result"]["content"][0]["text"].as_str().unwrap_or_default().to_owned()
}

// ---------------------------------------------------------------- helpers added for faults/concurrency/lifecycle/bytes

/// `[[upstream]]` for the raw stdio server with extra command-line arguments (e.g. `--page-size 40`).
pub fn raw_upstream_args(name: &str, marker: &str, args: &[&str], extra: &str) -> String {
    let script = repo_root().join("tests/fixtures/raw_stdio_server.py");
    let mut cmd = vec!["python3".to_owned(), script.display().to_string(), "--marker".into(), marker.to_owned()];
    cmd.extend(args.iter().map(|a| (*a).to_owned()));
    format!(
        "[[upstream]]\nname = \"{name}\"\ncommand = {}\nclient_requests = [\"sampling\", \"elicitation\", \"roots\"]\n{extra}\n",
        serde_json::to_string(&cmd).unwrap()
    )
}

/// Remove ANSI colour escapes (the gateway's log may be coloured even on a pipe).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

impl Gateway {
    /// The captured log without colour codes.
    pub fn plain_log(&self) -> String {
        strip_ansi(&self.log_text())
    }

    /// Poll the log until a line satisfies `pred`; returns that line.
    pub fn wait_log_line(&self, within: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.plain_log().lines().find(|l| pred(l)) {
                return Some(l.to_owned());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// The JSON-RPC error code of a response (panics with the message if it is not an error).
pub fn error_code(resp: &Value) -> i64 {
    resp["error"]["code"].as_i64().unwrap_or_else(|| panic!("expected a JSON-RPC error, got {resp}"))
}

impl Http {
    /// Send a request with an explicit id; returns every message of the reply (notifications first, then the
    /// response) and the raw reply.
    pub async fn request_all(&self, id: Value, method: &str, params: Value) -> (Vec<Value>, Reply) {
        let r = self.post(&json!({"jsonrpc":"2.0","id":id,"method":method,"params":params})).await;
        assert_eq!(r.status, 200, "{method}: {}", r.body);
        (r.messages(), r)
    }

    /// DELETE the session.
    pub async fn delete(&self) -> u16 {
        self.raw(reqwest::Method::DELETE, None, &[]).await.status
    }
}

/// Write `text` as a config file in a fresh temp dir and run `portcullis <args> -c FILE`, killing it after
/// `within`. Returns (exit status, stdout, stderr, config path, temp dir guard).
pub fn run_cli(
    args: &[&str],
    text: &str,
    within: Duration,
) -> (ExitStatus, String, String, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(bin())
        .args(args)
        .arg("-c")
        .arg(&config)
        .current_dir(repo_root())
        .env("PORTCULLIS_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut so, &mut s);
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut se, &mut s);
        s
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let st = child.wait().unwrap();
            let (o, e) = (t1.join().unwrap(), t2.join().unwrap());
            panic!("portcullis {args:?} did not exit within {within:?} ({st}); stdout:\n{o}\nstderr:\n{e}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (o, e) = (t1.join().unwrap(), t2.join().unwrap());
    (status, o, strip_ansi(&e), config, dir)
}

/// Like [`raw_upstream_args`], but the child sleeps `delay` seconds (via `sh -c`) before exec'ing the server, to
/// order upstream start-ups deterministically.
pub fn raw_upstream_delayed(name: &str, marker: &str, delay: &str, args: &[&str], extra: &str) -> String {
    let script = repo_root().join("tests/fixtures/raw_stdio_server.py");
    let mut line = format!("sleep {delay}; exec python3 '{}' --marker {marker}", script.display());
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    let cmd = ["sh".to_owned(), "-c".to_owned(), line];
    format!(
        "[[upstream]]\nname = \"{name}\"\ncommand = {}\nclient_requests = [\"sampling\", \"elicitation\", \"roots\"]\n{extra}\n",
        serde_json::to_string(&cmd).unwrap()
    )
}

// ---------------------------------------------------------------- helpers added for identity

impl Http {
    /// A client that sends `Authorization: <authorization>` on every request (POST, GET and DELETE).
    pub fn with_authorization(url: &str, authorization: &str) -> Http {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::AUTHORIZATION, reqwest::header::HeaderValue::from_str(authorization).unwrap());
        let client = reqwest::Client::builder().default_headers(h).build().unwrap();
        Http { client, url: url.to_owned(), session: None, next_id: 0 }
    }

    /// A client that sends `Authorization: Bearer <token>` on every request.
    pub fn bearer(url: &str, token: &str) -> Http {
        Self::with_authorization(url, &format!("Bearer {token}"))
    }
}

impl Gateway {
    /// Start `portcullis serve -c <config>` on an existing config file (its own `[server]` section must listen on
    /// `127.0.0.1:0` for both ports).
    pub fn start_file(config: &Path, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "-c"]).arg(config).current_dir(repo_root());
        cmd.env("PORTCULLIS_LOG", "info,portcullis_upstream=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let l2 = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut g = l2.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut url, mut admin) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(90);
        while url.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("Portcullis is listening on ") {
                        url = Some(rest.trim().to_owned());
                    }
                    if let Some(rest) = line.strip_prefix("Admin endpoints (/healthz, /readyz) on ") {
                        admin = Some(rest.trim().to_owned());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("gateway did not start; log:\n{}", log.lock().unwrap());
                }
            }
        }
        Gateway { child: Some(child), url: url.unwrap(), admin, log, config: config.to_owned(), _dir: dir }
    }
}
