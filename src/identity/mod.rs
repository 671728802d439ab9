//! Identity: telling which records are the same person.
//!
//! `synth` generates realistic people with known duplicates and hard negatives; `quality`
//! scores predicted pairs against that truth. Neither depends on the matching engine.

pub mod quality;
pub mod synth;
