//! Placeholder matcher: exact email only (replaced by the real engine).
use crate::domain::{Field, Fields};

#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub value: f64,
    pub rule: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    AutoLink,
    Review,
    NoMatch,
}

#[derive(Debug, Clone, Default)]
pub struct Matcher;

impl Matcher {
    pub fn profile_of(&self, fields: &Fields) -> Profile {
        Profile { email: fields.get(&Field::Email).map(|e| e.trim().to_lowercase()) }
    }
    pub fn blocking_keys(&self, p: &Profile) -> Vec<String> {
        p.email.iter().map(|e| format!("e:{e}")).collect()
    }
    pub fn score(&self, a: &Profile, b: &Profile) -> Option<Score> {
        (a.email.is_some() && a.email == b.email)
            .then(|| Score { value: 1.0, rule: "exact_email".into() })
    }
    pub fn verdict(&self, score: f64) -> Verdict {
        if score >= 0.92 {
            Verdict::AutoLink
        } else if score >= 0.75 {
            Verdict::Review
        } else {
            Verdict::NoMatch
        }
    }
}
