//! `portcullis-sim`: the tools that measure Portcullis. [`mock`] is a fast MCP server (Streamable HTTP or stdio,
//! one handler behind both) with a fixed latency, a result size and a seeded error rate; [`load`] is a load
//! generator that opens MCP sessions and drives `tools/call` closed-loop (N workers back to back) or open-loop
//! (a fixed rate, latency measured from the intended send time so a stall is not hidden by coordinated omission).
//!
//! It does not start or configure the gateway (`bench/run.sh` does), and the mock implements only what a
//! `tools/call` benchmark needs: no resources, prompts, server-to-client requests or GET streams.
//!
//! Main types: [`mock::Mock`], [`load::LoadConfig`], [`load::Report`]. The `pc-bench` binary is a thin CLI
//! over both; they are meant to grow into `portcullis mock-server` and `portcullis loadtest`.

pub mod load;
pub mod mock;
