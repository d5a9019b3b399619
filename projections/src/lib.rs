//! Read models (filled in by the projections module).
