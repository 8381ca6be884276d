//! Milter benchmarking for nobounce: a load generator that plays the MTA
//! side of the milter protocol (version 6) against any milter, and a no-op
//! milter on indymilter as the floor to compare against.
//!
//! # Layout
//!
//! - [`target`]: where the milter listens (`inet:127.0.0.1:PORT`,
//!   `unix:PATH`; TCP is loopback only).
//! - `wire`: framing; each batch of commands goes out with one `write` on a
//!   `TCP_NODELAY` socket, so Nagle's algorithm and delayed ACKs never add
//!   their ~40 ms to a round trip.
//! - `session`: the MTA state machine of one connection, honouring the
//!   milter's negotiated `NO_*`/`NOREPLY_*` options like Postfix does.
//! - [`workload`]: seeded, deterministic envelope data (Zipf-distributed
//!   sender domains, client IPs from documentation ranges).
//! - [`run_load`] / [`run_hold`]: the measurements; [`report`]: results.
//! - [`noop`]: the no-op reference milter.
//! - [`dns`]: the SPF records of the generated sender domains on a loopback
//!   DNS server, optionally slowed down (binary `bench-dns`).
//!
//! The binaries `milter-loadgen` and `noop-milter` only parse arguments and
//! call into this library, so tests run both in-process.

pub mod dns;
pub mod load;
pub mod noop;
pub mod report;
mod session;
pub mod target;
mod wire;
pub mod workload;

pub use crate::{
    load::{process_cpu, run_hold, run_load, HoldConfig, LoadConfig},
    noop::{run_noop_milter, NoDelayListener, NoopConfig, NoopMode},
    report::{HoldReport, LatencySummary, LoadReport},
    session::{Stage, StageError, Status},
    target::Target,
    wire::WireError,
    workload::Workload,
};
