//! Admit's domain: accounts, invitations, users and their rules.
//!
//! Pure by design: commands go in, events come out (`decide`), state is
//! folded from events (`evolve`). No database, no HTTP, no clock: the caller
//! passes the current time and whatever set-based facts it looked up.

pub mod error;
pub mod password;
pub mod token;
pub mod values;

pub use error::DomainError;
