//! `pc-bench`: run the mock MCP server or the load generator from the command line (used by `bench/run.sh`).

use clap::{Parser, Subcommand};
use portcullis_sim::load::{self, LoadConfig};
use portcullis_sim::mock::{self, MockConfig};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "pc-bench", about = "Mock MCP server and load generator for benchmarking Portcullis")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the mock MCP server (tools `echo` and `work`) over Streamable HTTP at /mcp, or over stdin/stdout.
    Mock {
        /// Address to listen on (port 0 picks a free one; the bound URL is printed on stdout).
        #[arg(long, conflicts_with = "stdio", required_unless_present = "stdio")]
        listen: Option<SocketAddr>,
        /// Serve newline-delimited JSON-RPC on stdin/stdout instead.
        #[arg(long)]
        stdio: bool,
        /// How long the `work` tool takes, e.g. `0ms`, `5ms`.
        #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
        latency: Duration,
        /// Minimum result text size in bytes.
        #[arg(long, default_value_t = 64)]
        result_bytes: usize,
        /// Fraction of calls that return `isError: true`.
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Seed for the error draws.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Drive tools/call against an MCP endpoint and print throughput and latency percentiles.
    Load {
        /// MCP endpoint, e.g. http://127.0.0.1:8080/mcp.
        #[arg(long)]
        url: String,
        /// Workers (closed loop: calls in flight).
        #[arg(long, short, default_value_t = 1)]
        concurrency: usize,
        /// Measured window.
        #[arg(long, short, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Unrecorded run-in before the window.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// Open loop at this many calls/s (latency measured from each call's scheduled send time).
        #[arg(long)]
        rate: Option<f64>,
        /// MCP sessions to spread the workers over.
        #[arg(long, default_value_t = 1)]
        sessions: usize,
        #[arg(long, default_value = "echo")]
        tool: String,
        /// Tool arguments as a JSON object.
        #[arg(long, default_value = r#"{"text":"hello"}"#)]
        args: String,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pc-bench: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Mock { listen, stdio, latency, result_bytes, error_rate, seed } => {
                let cfg = MockConfig { latency, result_bytes, error_rate, seed };
                match (stdio, listen) {
                    (true, _) | (false, None) => mock::serve_stdio(cfg).await.map_err(anyhow::Error::from),
                    (false, Some(addr)) => serve(addr, cfg).await,
                }
            }
            Cmd::Load { url, concurrency, duration, warmup, rate, sessions, tool, args, json } => {
                let args = serde_json::from_str(&args).map_err(|e| {
                    anyhow::anyhow!("--args is not valid JSON ({e}); pass an object like '{{\"text\":\"hi\"}}'")
                });
                match args {
                    Ok(args) => {
                        let cfg = LoadConfig {
                            url,
                            concurrency,
                            duration,
                            warmup,
                            tool,
                            args,
                            sessions,
                            rate,
                            headers: Default::default(),
                        };
                        load::run(&cfg)
                            .await
                            .map(|r| println!("{}", if json { r.to_json() } else { r.to_string() }))
                            .map_err(anyhow::Error::from)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pc-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(addr: SocketAddr, cfg: MockConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}; pick another --listen address"))?;
    let local = listener.local_addr()?;
    println!("pc-bench mock listening on http://{local}/mcp");
    mock::serve_http(listener, cfg).await?;
    Ok(())
}
