//! Ingest: how changes reach leadsync from the vendors, by polling them (pollers) or by being
//! called (webhooks).
//!
//! Only the webhook verification and parsing layer lives here so far; it is pure (no IO), so the
//! HTTP layer can answer from its typed errors and the tests can drive it with bytes alone.

pub mod webhook;
