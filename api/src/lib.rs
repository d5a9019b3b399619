//! Admit's application layer: the command handlers every entry point uses
//! (HTTP, the `admit` command line, the workers), and the HTTP API.
//!
//! A command handler opens one transaction, loads the aggregates it needs
//! (locking their stream heads so commands on one account queue instead of
//! conflicting), looks up the set-based facts (reservations, quota), asks
//! the pure domain to decide, then appends the events, claims the
//! reservations and updates the read models in that same transaction.

pub mod commands;
pub mod error;
pub mod http;
pub mod passwords;
pub mod secrets;

pub use commands::{Admit, RequestContext};
pub use error::{Error, FieldError};
pub use secrets::Secrets;
