//! Integration tests: the real engine (or the real binary) against both simulators on port 0
//! with a temp ledger, asserting through the simulators' stores.

mod activities;
mod closed_loop;
mod config;
mod connectors;
mod convergence;
mod custom_fields;
mod duplicates;
mod erase;
mod funnel;
mod helpers;
mod lifecycle;
mod sla_clock;
mod sync;
mod tidy;
mod touches;
mod vendor_writes;
mod webhooks;
