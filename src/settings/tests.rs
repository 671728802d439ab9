//! Settings tests.
