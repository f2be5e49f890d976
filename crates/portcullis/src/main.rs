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
    },
    /// Validate the config, start the upstreams once, print the resolved catalog, and exit.
    Check {
        #[arg(short, long)]
        config: PathBuf,
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
            Cmd::Stdio { config, topic } => stdio(config, topic).await,
            Cmd::Check { config } => check(config).await,
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
    let gw = Gateway::start(cfg);
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

async fn stdio(path: PathBuf, topic: Option<String>) -> ExitCode {
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
    let res = tokio::select! {
        r = portcullis_gateway::stdio::serve(gw.clone(), topic, tokio::io::stdin(), tokio::io::stdout()) => r,
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
    let gw = Gateway::start(cfg);
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
