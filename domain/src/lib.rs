//! Admit's domain: accounts, invitations, users and their rules.
//!
//! Pure by design: commands go in, events come out (`decide` functions such
//! as [`invitation::invite`]), state is folded from events (`evolve`). No
//! database, no HTTP, no clock, no randomness: the caller passes the current
//! time, fresh ids and nonces, and the set-based facts it looked up in the
//! same transaction (seat usage, pending invitations, quota).

pub mod access;
pub mod account;
pub mod error;
pub mod event;
pub mod ids;
pub mod invitation;
pub mod password;
pub mod personal;
pub mod renewal;
pub mod template;
pub mod token;
pub mod user;
pub mod values;

pub use error::DomainError;
pub use event::Event;
