//! Admit's event log on sqlx, on PostgreSQL and SQLite behind one interface.
//!
//! The log is the source of truth: every change is appended as an event to a
//! stream with optimistic concurrency, each event chained by SHA-256 to the
//! previous one of its stream. Readers of the global order use a compound
//! cursor `(transaction id, position)` bounded by the oldest in-flight
//! transaction, so an event that commits late is never skipped.
//!
//! Besides the log, this crate owns the tables that must be written in the
//! same transaction as the events: reservations for set-based rules, the
//! per-inviter send record for quotas, and the per-person encryption keys.

pub mod copy_scan;
pub mod database;
pub mod error;
pub mod hash;
pub mod log;
pub mod personal;
pub mod reservations;
pub mod scan;
pub mod streams;
pub mod testing;
pub mod verify;

pub use database::{Backend, Conn, Database, Tx};
pub use error::LedgerError;
pub use log::{AppendOutcome, ExpectedVersion, GlobalCursor, Metadata, NewEvent, RecordedEvent};
pub use streams::StreamAppend;
pub use verify::{Mismatch, VerifyReport};

/// Result alias for this crate.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
