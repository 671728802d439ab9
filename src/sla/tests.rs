//! Tests of the SLA task and its ledger side.
