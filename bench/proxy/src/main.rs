//! `pc-proxy`: the floor for `bench/run.sh`. A minimal hyper reverse proxy that forwards `POST`, `GET` and `DELETE`
//! `/mcp` to one upstream URL: request and response bodies are streamed (never buffered), upstream connections are
//! kept alive in a pool, and nothing about MCP is parsed. Whatever the gateway costs above this is the price of
//! being an MCP gateway rather than a byte pipe.
//!
//!   pc-proxy --listen 127.0.0.1:0 --upstream http://127.0.0.1:3001/mcp
//!
//! Prints `pc-proxy listening on http://ADDR/mcp` once bound. Same runtime (multi-thread tokio) and allocator
//! (mimalloc) as the gateway.

use http::header::{HeaderValue, CONNECTION, HOST};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The upstream's streamed body, or an empty one for the proxy's own error answers.
type Body = Either<Incoming, Empty<Bytes>>;

struct Proxy {
    client: Client<HttpConnector, Incoming>,
    upstream: Uri,
    host: HeaderValue,
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(Either::Right(Empty::new()));
    *r.status_mut() = code;
    r
}

async fn forward(proxy: Arc<Proxy>, mut req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    if req.uri().path() != "/mcp" {
        return Ok(status(StatusCode::NOT_FOUND));
    }
    if ![Method::POST, Method::GET, Method::DELETE].contains(req.method()) {
        return Ok(status(StatusCode::METHOD_NOT_ALLOWED));
    }
    *req.uri_mut() = proxy.upstream.clone();
    let headers = req.headers_mut();
    headers.insert(HOST, proxy.host.clone());
    headers.remove(CONNECTION);
    match proxy.client.request(req).await {
        Ok(resp) => Ok(resp.map(Either::Left)),
        Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
    }
}

fn args() -> Result<(SocketAddr, Uri), String> {
    let mut listen = None;
    let mut upstream = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => listen = it.next(),
            "--upstream" => upstream = it.next(),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    let listen = listen.ok_or("--listen ADDR is required")?;
    let listen = listen.parse().map_err(|e| format!("--listen {listen}: {e}"))?;
    let upstream = upstream.ok_or("--upstream URL is required")?;
    let upstream: Uri = upstream.parse().map_err(|e| format!("--upstream {upstream}: {e}"))?;
    if upstream.scheme_str() != Some("http") || upstream.authority().is_none() {
        return Err(format!("--upstream {upstream}: only http://HOST:PORT/PATH is supported"));
    }
    Ok((listen, upstream))
}

fn main() -> ExitCode {
    let (listen, upstream) = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pc-proxy: {e}\nusage: pc-proxy --listen ADDR --upstream http://HOST:PORT/mcp");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pc-proxy: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(serve(listen, upstream)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pc-proxy: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(listen: SocketAddr, upstream: Uri) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("pc-proxy listening on http://{}/mcp", listener.local_addr()?);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(connector);
    let authority = upstream.authority().map(|a| a.as_str()).unwrap_or_default();
    let host = HeaderValue::from_str(authority).map_err(std::io::Error::other)?;
    let proxy = Arc::new(Proxy { client, upstream, host });
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| forward(proxy.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
