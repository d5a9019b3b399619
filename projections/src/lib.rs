//! Admit's read models: the tables the API reads, projected from the log.
//!
//! Projections are applied inline, in the same transaction as the append, so
//! the API reads its own writes. Read-model rows carry the stream version
//! they reflect, which makes applying an event twice harmless. Any
//! projection can be rebuilt from the log into fresh tables ([`rebuild`]),
//! and the log can be folded to any past moment ([`as_of`]).
//!
//! Read-model tables are not in the SQL migrations: they are disposable and
//! described once in [`schema`], which creates them under any name prefix
//! (the live tables have none; a rebuild writes `rebuild_*` and swaps).

pub mod as_of;
mod bulk;
pub mod codec;
mod deliveries;
pub mod error;
mod feed;
pub mod projector;
pub mod rebuild;
pub mod schema;

pub use codec::{Codec, Envelope};
pub use error::ProjectionError;
pub use projector::{NewInvitation, Projector};

/// Result alias for this crate.
pub type Result<T, E = ProjectionError> = std::result::Result<T, E>;
