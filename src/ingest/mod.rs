//! Ingest: how changes reach leadsync from the vendors, by polling them (pollers) or by being
//! called (webhooks).
//!
//! - [`webhook`]: verification and parsing per sender (pure, no IO) and the HTTP listener.
//! - [`sink`]: the group commit that makes webhook notices durable before they are
//!   acknowledged.
//!
//! Pollers live in the engine (`app`), since they only call connectors and the ledger.

pub mod sink;
pub mod webhook;
