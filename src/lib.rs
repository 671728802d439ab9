//! leadsync keeps a sales CRM and a marketing-automation platform telling the same story about
//! every lead.
//!
//! # Layout
//! - `domain`: canonical fields, stages, changes and pushes; no IO.
//! - `connectors`: one folder per vendor behind one trait; only `wire.rs` knows vendor JSON.
//! - `ingest`: pollers (and later webhooks) that commit changes to the inbox.
//! - `identity`: normalisation and the matching engine (profiles, rules, blocking, scores).
//! - `reconcile`: pure decisions from (ledger state, change, rules).
//! - `contract`: the lead contract's pure parts: lifecycle table, qualification rules,
//!   business calendar, SLA clocks.
//! - `identity`: synthetic people with known duplicates, and matching-quality scores.
//! - `ledger`: the SQLite ledger; the only module that runs SQL.
//! - `reevaluate`: the contract's rules re-applied to everyone after a change of rules, and
//!   to persons with event windows as time passes.
//! - `merger`: vendor-side merges of a person's same-system duplicates (off by default).
//! - `closed_loop`: polls opportunities and campaign touches into the ledger for reports.
//! - `push`: drains the outbox to each vendor in batches, with retries and dead letters.
//! - `engine`: wires pollers, reconciler and pushers for a set of systems.
//! - `sim`: vendor simulators for the demo, tests and benchmarks.
//! - `settings`: layered config parsed into validated types.
//! - `cli`: the subcommands of the one binary.
//! - `admin`: health, readiness and Prometheus metrics on their own loopback listener.
//! - `metrics`: every metric name and the one Prometheus recorder.
//! - `retry`, `telemetry`, `shutdown`: cross-cutting pieces.

pub mod admin;
pub mod alerts;
pub mod app;
pub mod cli;
pub mod closed_loop;
pub mod connectors;
pub mod contract;
pub mod domain;
pub mod identity;
pub mod ingest;
pub mod ledger;
pub mod merger;
pub mod metrics;
pub mod reconcile;
pub mod reevaluate;
pub mod retry;
pub mod settings;
pub mod shutdown;
pub mod sim;
pub mod sla;
pub mod telemetry;
pub mod verify;
pub mod xml;
