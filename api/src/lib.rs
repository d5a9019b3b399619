//! Command handlers and HTTP API.
