//! Identity: deciding which records are the same person.
//!
//! - `normalize`: pure normalisation of emails, phones, names and companies.
//! - `matcher`: profiles, configurable rules after Salesforce's standard lead matching rule,
//!   blocking keys and scores, and batch candidate pairs for `leadsync dedupe`.
//! - `synth`: realistic people with known duplicates and hard negatives; `quality`: scores
//!   predicted pairs against that truth (neither depends on the matching engine).
//!
//! Nothing here does IO or logs: callers log ids and rule names, never the values compared.

pub mod matcher;
pub mod normalize;
pub mod quality;
pub mod synth;

#[cfg(test)]
mod quality_tests;
