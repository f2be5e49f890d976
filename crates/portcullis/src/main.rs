//! `portcullis`: the command line. Each subcommand is a thin shell over the library crates.

use clap::{Parser, Subcommand};
use portcullis_config::Config;
use portcullis_gateway::{Gateway, StartError};
use std::future::IntoFuture;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "portcullis", version, about = "A production gateway for the Model Context Protocol")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (Streamable HTTP at /mcp and /mcp/{topic}, legacy SSE at /sse).
    Serve {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Serve one MCP client over stdin/stdout (for desktop apps that launch their servers).
    Stdio {
        #[arg(short, long)]
        config: PathBuf,
        /// Serve only this topic's tools.
        #[arg(long)]
        topic: Option<String>,
        /// The local user's identity for upstream credentials (stdio carries no tokens). Default: "local".
        #[arg(long = "as", value_name = "SUBJECT")]
        as_subject: Option<String>,
    },
    /// Validate the config, start the upstreams once, print the resolved catalog, and exit.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// API keys: `keys new` prints a fresh key and the config lines holding only its hash.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Dev tokens: `token mint` signs a test JWT with the config's dev key (created on first use).
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// A fault-injecting mock MCP server: latency distributions, errors, crashes, hangs, progress, list_changed.
    MockServer(portcullis_sim::cli::MockServerArgs),
    /// Run a load and chaos scenario; report latency, errors, shed rates per class and SLO verdicts (exit 1 on
    /// an SLO failure).
    Loadtest(portcullis_sim::cli::LoadtestArgs),
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create an Ed25519 signing key (PEM) for `mint_obo` (alg = "EdDSA") if the file does not exist, and write
    /// its public JWKS next to it (`FILE.jwks.json`).
    Signing {
        #[arg(long)]
        out: PathBuf,
    },
    New {
        /// The key's id in the config.
        #[arg(long, default_value = "my-key")]
        id: String,
        #[arg(long, default_value = "my-service")]
        subject: String,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    Mint {
        #[arg(short, long)]
        config: PathBuf,
        #[arg(long)]
        sub: String,
        /// Comma-separated roles.
        #[arg(long, default_value = "")]
        roles: String,
        /// Space- or comma-separated scopes.
        #[arg(long, default_value = "")]
        scopes: String,
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async {
        match cli.cmd {
            Cmd::Serve { config } => serve(config).await,
            Cmd::Stdio { config, topic, as_subject } => stdio(config, topic, as_subject).await,
            Cmd::Check { config } => check(config).await,
            Cmd::Keys { cmd: KeysCmd::New { id, subject } } => keys_new(&id, &subject),
            Cmd::Keys { cmd: KeysCmd::Signing { out } } => {
                let jwks = PathBuf::from(format!("{}.jwks.json", out.display()));
                match portcullis_auth::generate_dev_key(&out, &jwks) {
                    Ok(()) => {
                        println!("signing key: {} (public JWKS: {})", out.display(), jwks.display());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("portcullis: {e}");
                        ExitCode::from(1)
                    }
                }
            }
            Cmd::Token { cmd: TokenCmd::Mint { config, sub, roles, scopes, ttl } } => {
                token_mint(&config, &sub, &roles, &scopes, &ttl)
            }
            Cmd::MockServer(args) => portcullis_sim::cli::mock_server(args).await,
            Cmd::Loadtest(args) => portcullis_sim::cli::loadtest(args).await,
        }
    })
}

fn init_logs() {
    // Logs always go to stderr: stdout belongs to the protocol in `stdio` mode.
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("portcullis: config error: {e}");
        ExitCode::from(2)
    })
}

/// How long startup waits for required upstreams: the slowest one's connect_timeout.
fn startup_wait(cfg: &Config) -> Duration {
    cfg.upstreams.iter().filter(|u| u.required).map(|u| u.connect_timeout).max().unwrap_or(Duration::ZERO)
        + Duration::from_secs(1)
}

async fn start(cfg: Config) -> Result<Arc<Gateway>, ExitCode> {
    let wait = startup_wait(&cfg);
    if cfg.auth.is_none() {
        tracing::warn!(
            "no [auth] section: ANONYMOUS MODE, every caller is \"anonymous\"; fine for a local quickstart, never for a shared listener"
        );
    }
    let gw = Gateway::start(cfg).map_err(|e| {
        eprintln!("portcullis: {e}");
        ExitCode::from(2)
    })?;
    match gw.wait_initial(wait).await {
        Ok(()) => Ok(gw),
        Err(e @ StartError::Catalog(_)) => {
            eprintln!("portcullis: {e}");
            gw.shutdown_all().await;
            Err(ExitCode::from(2))
        }
        Err(e) => {
            // Keep serving: the upstream is retried with backoff and /readyz reports it.
            tracing::error!("{e}; serving without it until it comes up");
            Ok(gw)
        }
    }
}

async fn serve(path: PathBuf) -> ExitCode {
    init_logs();
    let cfg = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (listen, admin, grace) = (cfg.server.listen, cfg.server.admin_listen, cfg.server.shutdown_grace);
    let gw = match start(cfg).await {
        Ok(g) => g,
        Err(code) => return code,
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("portcullis: cannot listen on {listen} (server.listen in {}): {e}", path.display());
            gw.shutdown_all().await;
            return ExitCode::from(1);
        }
    };
    let addr = listener.local_addr().unwrap_or(listen);
    let stop = CancellationToken::new();
    let app = portcullis_gateway::http::router(gw.clone());
    let server =
        tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned()).into_future());
    let mut admin_task = None;
    if let Some(a) = admin {
        match tokio::net::TcpListener::bind(a).await {
            Ok(l) => {
                let local = l.local_addr().unwrap_or(a);
                println!("Admin endpoints (/healthz, /readyz) on http://{local}");
                let app = portcullis_gateway::http::admin_router(gw.clone());
                admin_task = Some(tokio::spawn(
                    axum::serve(l, app).with_graceful_shutdown(stop.clone().cancelled_owned()).into_future(),
                ));
            }
            Err(e) => {
                eprintln!("portcullis: cannot listen on {a} (server.admin_listen): {e}");
                stop.cancel();
                gw.shutdown_all().await;
                return ExitCode::from(1);
            }
        }
    }
    print_banner(&gw, addr);
    wait_for_signal().await;
    tracing::info!("shutting down: no new connections; waiting up to {grace:?} for in-flight calls");
    stop.cancel();
    let deadline = Instant::now() + grace;
    while gw.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    gw.shutdown_all().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    if let Some(t) = admin_task {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

fn print_banner(gw: &Gateway, addr: std::net::SocketAddr) {
    let cat = gw.catalog();
    println!("Portcullis is listening on http://{addr}");
    if gw.cfg.server.all_tools_endpoint {
        let n = cat.view(None).map_or(0, |v| v.tool_names().len());
        println!("  all tools ({n}):     http://{addr}/mcp        (legacy SSE: http://{addr}/sse)");
    }
    for t in cat.topics() {
        let n = cat.view(Some(t)).map_or(0, |v| v.tool_names().len());
        println!("  topic {t} ({n} tools): http://{addr}/mcp/{t}");
    }
    println!(
        "Connect a client, e.g.:  npx @modelcontextprotocol/inspector --cli http://{addr}/mcp --method tools/list"
    );
    println!("Stop with Ctrl-C.");
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn stdio(path: PathBuf, topic: Option<String>, as_subject: Option<String>) -> ExitCode {
    init_logs();
    let cfg = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(t) = &topic {
        if !cfg.topics.iter().any(|x| &x.name == t) {
            eprintln!("portcullis: no [[topic]] named {t:?} in {}", path.display());
            return ExitCode::from(2);
        }
    } else if !cfg.server.all_tools_endpoint {
        eprintln!("portcullis: server.all_tools_endpoint is false in {}; pass --topic", path.display());
        return ExitCode::from(2);
    }
    let gw = match start(cfg).await {
        Ok(g) => g,
        Err(code) => return code,
    };
    let mut local = portcullis_auth::Principal::anonymous();
    local.subject = as_subject.unwrap_or_else(|| "local".into());
    let principal = Arc::new(local);
    let res = tokio::select! {
        r = portcullis_gateway::stdio::serve(gw.clone(), topic, principal, tokio::io::stdin(), tokio::io::stdout()) => r,
        _ = wait_for_signal() => Ok(()),
    };
    gw.shutdown_all().await;
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: stdio session failed: {e}");
            ExitCode::from(1)
        }
    }
}

async fn check(path: PathBuf) -> ExitCode {
    init_logs();
    let cfg = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!("{}: config OK ({} upstreams, {} topics)", path.display(), cfg.upstreams.len(), cfg.topics.len());
    let wait = startup_wait(&cfg);
    let gw = match Gateway::start(cfg) {
        Ok(g) => g,
        Err(e) => {
            println!("ERROR: {e}");
            return ExitCode::from(2);
        }
    };
    let res = gw.wait_initial(wait).await;
    let cat = gw.catalog();
    let mut code = ExitCode::SUCCESS;
    if let Err(e) = &res {
        println!("ERROR: {e}");
        code = ExitCode::from(1);
    }
    for (name, status, err) in gw.upstream_status() {
        match err {
            Some(e) if status != portcullis_upstream::Status::Ready => {
                println!("upstream {name}: {status:?} (last error: {e})")
            }
            _ => println!("upstream {name}: {status:?}"),
        }
    }
    for w in cat.warnings() {
        println!("warning: {w}");
    }
    let mut endpoints: Vec<(String, Option<&str>)> = Vec::new();
    if gw.cfg.server.all_tools_endpoint {
        endpoints.push(("/mcp".into(), None));
    }
    for t in cat.topics() {
        endpoints.push((format!("/mcp/{t}"), Some(t)));
    }
    for (path, topic) in endpoints {
        let names = cat.view(topic).map(|v| v.tool_names()).unwrap_or_default();
        println!("{path}: {} tools", names.len());
        for n in names {
            println!("  {n}");
        }
    }
    gw.shutdown_all().await;
    code
}

fn keys_new(id: &str, subject: &str) -> ExitCode {
    let (key, hash) = portcullis_auth::new_api_key();
    println!("API key (give it to the client; it is not stored anywhere):\n  {key}\n");
    println!("Config lines (only the hash is stored):\n");
    println!("[[auth.api_key]]\nid = \"{id}\"\nsha256 = \"{hash}\"\nsubject = \"{subject}\"\nroles = []");
    ExitCode::SUCCESS
}

fn token_mint(path: &std::path::Path, sub: &str, roles: &str, scopes: &str, ttl: &str) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let fail = |msg: String| {
        eprintln!("portcullis: {msg}");
        ExitCode::from(2)
    };
    let Some(auth) = &cfg.auth else {
        return fail(format!(
            "{}: no [auth] section; token mint needs [auth] with dev_signing_key_file",
            path.display()
        ));
    };
    let Some(key) = &auth.dev_signing_key_file else {
        return fail(format!("{}: auth.dev_signing_key_file: not set; token mint signs with it", path.display()));
    };
    let Some(jwt) = auth.jwt.iter().find(|j| j.jwks_file.is_some()) else {
        return fail(format!("{}: auth.jwt: no entry with jwks_file to publish the dev key in", path.display()));
    };
    let ttl = match portcullis_config::parse_duration(ttl) {
        Ok(t) => t,
        Err(e) => return fail(format!("--ttl: {e}")),
    };
    let key = cfg.base_dir.join(key);
    let jwks = cfg.base_dir.join(jwt.jwks_file.clone().unwrap_or_default());
    if let Err(e) = portcullis_auth::generate_dev_key(&key, &jwks) {
        return fail(e);
    }
    let list = |s: &str| s.split([',', ' ']).filter(|x| !x.is_empty()).map(str::to_owned).collect::<Vec<_>>();
    let audience = jwt.audience.clone().unwrap_or_else(|| auth.resource.clone());
    match portcullis_auth::mint_dev_token(&key, &jwt.issuer, &audience, sub, &list(roles), &list(scopes), ttl) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
