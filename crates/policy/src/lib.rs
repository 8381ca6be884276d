//! # nobounce-policy
//!
//! The policy front end of nobounce: the Postfix SMTP access policy
//! delegation protocol (Postfix `check_policy_service`, Exim
//! `${readsocket}`), and the qmail-spp plugin that asks it. Like the milter
//! front end, it translates what the MTA says into calls of a
//! `nobounce-core` [`Session`](nobounce_core::Session), and the verdicts
//! into replies. Nothing here decides anything.
//!
//! # Layout
//!
//! - [`request`]: reading a request (bounded), writing an action.
//! - [`PolicyConn`]: one connection's requests as engine calls.
//! - [`serve`]: serves policy connections from a TCP or unix listener.
//! - [`qmail`]: the qmail-spp and RCPTCHECK plugin: its environment as a
//!   request, the reply as its output and exit code.

mod conn;
pub mod qmail;
pub mod request;
mod serve;

pub use crate::{
    conn::PolicyConn,
    request::{action, read_request, PolicyRequest, ProtocolState, RequestError},
    serve::{serve, PolicyListener, PolicyOptions},
};
