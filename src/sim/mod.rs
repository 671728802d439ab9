//! Faithful simulators of the vendor APIs (paths, auth, paging, limits, error shapes), for
//! `leadsync demo`, the tests, the benchmarks and staging runs.

pub mod harness;
pub mod hubspot;
pub mod population;
pub mod salesforce;
pub mod webhooks;
