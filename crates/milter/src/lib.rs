//! # nobounce-milter
//!
//! Maps the milter protocol (indymilter) to the nobounce decision engine
//! (`nobounce-core`). Callbacks translate macros and arguments into engine
//! calls, and verdicts into milter replies; nothing here decides.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration file model, with line numbers in
//!   errors.
//! - [`callbacks`]: indymilter callbacks and [`callbacks::apply_verdict`].
//! - [`control`]: ban administration and the local control socket.
//! - [`server`]: [`Milter`] (shared state, reload) and [`run`].

pub mod callbacks;
pub mod config;
pub mod control;
pub mod server;

pub use crate::{
    config::{Config, ConfigError, SocketSpec},
    server::{run, Milter, NoDelay, SetupError},
};
