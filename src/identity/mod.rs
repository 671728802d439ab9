//! Identity: normalisation and matching of people (placeholder until the engine lands).
pub mod matcher;
