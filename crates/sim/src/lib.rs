//! `portcullis-sim`: the tools that measure Portcullis and break it on purpose.
//!
//! - [`mock`]: a fault-injecting MCP server (Streamable HTTP or stdio, one handler behind both): per-tool
//!   latency distributions, result sizes, `isError` and JSON-RPC error rates, crashes, hangs, progress and
//!   slow-drip SSE, `list_changed` on a schedule, run-time chaos switches; seeded, so runs repeat.
//! - [`load`]: the benchmark's load generator (closed or open loop, one tool) behind `pc-bench`.
//! - [`loadtest`]: scenario-driven load and chaos (`portcullis loadtest`): flows with open-loop arrivals,
//!   principals, topics and priority classes, a chaos schedule against mock upstreams it starts, and a report
//!   with coordinated-omission-corrected percentiles, errors by code, shed rates per class and SLO verdicts.
//! - [`gate`]: the benchmark regression gate's arithmetic (callgrind instruction counts against a baseline).
//! - [`cli`]: the `mock-server` and `loadtest` subcommands for the `portcullis` binary.
//!
//! It does not contain the gateway: scenarios start `portcullis serve` as a child process.
//!
//! Main types: [`mock::Mock`], [`mock::MockSpec`], [`loadtest::Scenario`], [`loadtest::LoadReport`],
//! [`load::LoadConfig`], [`load::Report`].

pub mod cli;
pub mod gate;
pub mod load;
pub mod loadtest;
pub mod mock;
