//! The matching engine: normalised profiles, configurable rules, blocking keys and scores.
//!
//! # What it is modelled on
//! Salesforce's *Standard Lead Matching Rule* (and the Standard Contact Matching Rule, which
//! shares its criteria). Salesforce narrows candidates with match keys (email; first initial +
//! double-metaphone of the last name + email domain, company prefix or phone prefix), then
//! evaluates a boolean matching equation:
//!
//! ```text
//! (First AND Last AND Title AND Company) OR (First AND Last AND Email)
//! OR (First AND Last AND Phone AND Company) OR (First AND Last AND Street AND (City OR ZIP OR Phone))
//! OR (First AND Last AND Street AND Title) OR (First AND Last AND Title AND Email)
//! OR (First AND Last AND Phone)
//! ```
//!
//! with per-field matching methods: first name fuzzy (exact, initials, Jaro-Winkler, name
//! variants; threshold 85, names also tried transposed), last name fuzzy (exact, keyboard
//! distance, Metaphone 3; 90), company fuzzy (acronym, exact, syllable alignment, legal words
//! such as Inc removed; 70), phone fuzzy by sections (80), street (80), city (85), ZIP (80),
//! email exact. Blank fields never match.
//!
//! # How ours differs
//! - **Scores, not booleans.** Each field comparison yields a similarity in `[0, 1]`; the
//!   per-field threshold is only a gate (below it the rule does not fire). A firing rule scores
//!   `max_score − Σ(1 − similarity)`, minus penalties for conflicting identifiers outside the
//!   rule (two different phones; two different mailboxes at the same company domain; two
//!   unrelated companies). The best rule wins. The score is then compared with two thresholds:
//!   auto-link and review, where Salesforce only says "duplicate" or not.
//! - **Evidence of two people.** Namesakes are common (at a million generated rows they were
//!   most of the review band), so field methods do not credit what any two people with one
//!   name share: a local part made only of the names (`jsmith`, `john.smith`) at two different
//!   domains does not pass the email criterion; two mailboxes at one domain that carry
//!   different numbers (`jsmith`, `jsmith2`) are two mailboxes, not a typo; two street lines
//!   with different house numbers are two addresses; and company names are compared word by
//!   word, with the first word (the distinctive one: Ruby in Ruby Construction Associates)
//!   required to agree.
//! - **Exact email links on its own** (rule `exact_email`, score 1.0): the issue treats a
//!   normalised email as an exact key, where Salesforce also wants both names.
//! - **No Title** (leadsync has no canonical title field for matching), so the title clauses
//!   are dropped, and `(First AND Last AND Company)` stands in for `(... Title AND Company)`.
//!   This is looser than Salesforce; it is held back by the company threshold and the
//!   conflict penalties.
//! - `(Street AND (City OR ZIP))` is split into two AND-only rules, as our rules are
//!   conjunctions. A rule `name_domain` (both names + the same non-free-mail email domain) is
//!   ours: a second mailbox at the same employer is common between a CRM and a marketing tool.
//! - Algorithms: Jaro-Winkler (strsim) everywhere, with a nickname table for first names,
//!   initials, Soundex for last names and blocking (in place of Metaphone 3), acronym, token
//!   containment and word alignment for companies. Phones are compared as E.164 (exact), or allowing one
//!   wrong or swapped digit (fuzzy), not by North-American sections.
//! - Blocking uses several small keys per person (see [`Matcher::blocking_keys`]), including
//!   keys that survive transposed names and a typo in one of the names. Batch matching splits
//!   the two coarsest keys finer so blocks grow less with the file; blocks larger than
//!   `max_block_size` are skipped and counted, or, with `oversized_window`, compared by sorted
//!   neighbourhood (each row with the next few by name).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::normalize::{self, EmailRules};
use crate::connectors::KeyError;
use crate::domain::{Field, Fields};

/// Raw values of one person to be matched, as read from a record or a CSV row. Its `Debug`
/// names the fields present, never their values.
#[derive(Clone, Copy, Default)]
pub struct Parts<'a> {
    pub email: Option<&'a str>,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub company: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub street: Option<&'a str>,
    pub city: Option<&'a str>,
    pub postcode: Option<&'a str>,
}

impl fmt::Debug for Parts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = [
            ("email", self.email),
            ("first_name", self.first_name),
            ("last_name", self.last_name),
            ("company", self.company),
            ("phone", self.phone),
            ("street", self.street),
            ("city", self.city),
            ("postcode", self.postcode),
        ];
        let present: Vec<&str> = all.iter().filter(|(_, v)| v.is_some()).map(|(n, _)| *n).collect();
        f.debug_struct("Parts").field("present", &present).finish()
    }
}

// Slots of the normalised values inside a profile's one buffer.
const EMAIL: usize = 0;
const FIRST: usize = 1;
const FIRST_CANON: usize = 2;
const LAST: usize = 3;
const COMPANY: usize = 4;
const PHONE: usize = 5;
const STREET: usize = 6;
const CITY: usize = 7;
const POSTCODE: usize = 8;
const SLOTS: usize = 9;

/// Longest normalised value kept per field, in bytes. Longer values are cut at a character
/// boundary: nothing real is that long, and the cap keeps the slot offsets in a `u16`.
const MAX_VALUE: usize = 255;

/// One person's normalised values. Built by [`Matcher::profile`]; compact (one allocation)
/// because batch dedupe keeps a million of them in memory. Its `Debug` never prints values.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Profile {
    buf: Box<str>,
    ends: [u16; SLOTS],
}

impl Profile {
    fn slot(&self, i: usize) -> Option<&str> {
        let start = if i == 0 { 0 } else { usize::from(self.ends[i - 1]) };
        let end = usize::from(self.ends[i]);
        if end > start { self.buf.get(start..end) } else { None }
    }

    /// Normalised email (see [`normalize::email`]).
    pub fn email(&self) -> Option<&str> {
        self.slot(EMAIL)
    }
    /// The normalised email's domain.
    pub fn email_domain(&self) -> Option<&str> {
        self.email().and_then(normalize::email_domain)
    }
    /// Normalised first name (see [`normalize::name`]).
    pub fn first(&self) -> Option<&str> {
        self.slot(FIRST)
    }
    /// The given name the first name stands for (`bob` → `robert`).
    pub fn first_canonical(&self) -> Option<&str> {
        self.slot(FIRST_CANON).or_else(|| self.first())
    }
    /// Normalised last name.
    pub fn last(&self) -> Option<&str> {
        self.slot(LAST)
    }
    /// Normalised company, legal suffixes removed (see [`normalize::company`]).
    pub fn company(&self) -> Option<&str> {
        self.slot(COMPANY)
    }
    /// Phone in E.164.
    pub fn phone(&self) -> Option<&str> {
        self.slot(PHONE)
    }
    /// Normalised street line, common words abbreviated (`street` → `st`).
    pub fn street(&self) -> Option<&str> {
        self.slot(STREET)
    }
    /// Normalised city.
    pub fn city(&self) -> Option<&str> {
        self.slot(CITY)
    }
    /// Normalised postcode (lower-case, no spaces; US ZIP+4 cut to five digits).
    pub fn postcode(&self) -> Option<&str> {
        self.slot(POSTCODE)
    }
    /// Whether no field survived normalisation.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn get(&self, f: MatchField) -> Option<&str> {
        match f {
            MatchField::Email => self.email(),
            MatchField::EmailDomain => self.email_domain().filter(|d| !normalize::is_free_mail(d)),
            MatchField::FirstName => self.first(),
            MatchField::LastName => self.last(),
            MatchField::Company => self.company(),
            MatchField::Phone => self.phone(),
            MatchField::Street => self.street(),
            MatchField::City => self.city(),
            MatchField::Postcode => self.postcode(),
        }
    }

    fn build(values: [Option<String>; SLOTS]) -> Profile {
        let mut buf = String::new();
        let mut ends = [0u16; SLOTS];
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v {
                let cut = (0..=v.len().min(MAX_VALUE))
                    .rev()
                    .find(|c| v.is_char_boundary(*c))
                    .unwrap_or(0);
                buf.push_str(&v[..cut]);
            }
            // SLOTS * MAX_VALUE < u16::MAX, so this cannot saturate.
            ends[i] = u16::try_from(buf.len()).unwrap_or(u16::MAX);
        }
        Profile { buf: buf.into_boxed_str(), ends }
    }
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Field names only: profiles are PII.
        let names = [
            "email",
            "first",
            "first_canonical",
            "last",
            "company",
            "phone",
            "street",
            "city",
            "postcode",
        ];
        let present: Vec<&str> =
            (0..SLOTS).filter(|i| self.slot(*i).is_some()).map(|i| names[i]).collect();
        f.debug_struct("Profile").field("present", &present).finish()
    }
}

/// A field that matching rules can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchField {
    Email,
    /// The email's domain; free-mail domains count as absent.
    EmailDomain,
    FirstName,
    LastName,
    Company,
    Phone,
    Street,
    City,
    Postcode,
}

impl MatchField {
    const ALL: [MatchField; 9] = [
        MatchField::Email,
        MatchField::EmailDomain,
        MatchField::FirstName,
        MatchField::LastName,
        MatchField::Company,
        MatchField::Phone,
        MatchField::Street,
        MatchField::City,
        MatchField::Postcode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MatchField::Email => "email",
            MatchField::EmailDomain => "email_domain",
            MatchField::FirstName => "first_name",
            MatchField::LastName => "last_name",
            MatchField::Company => "company",
            MatchField::Phone => "phone",
            MatchField::Street => "street",
            MatchField::City => "city",
            MatchField::Postcode => "postcode",
        }
    }

    pub fn parse(s: &str) -> Option<MatchField> {
        MatchField::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// Salesforce's default threshold for the fuzzy method on this field (scaled to 0..1).
    fn default_fuzzy_threshold(self) -> f64 {
        match self {
            MatchField::FirstName | MatchField::City => 0.85,
            MatchField::LastName => 0.88,
            MatchField::Company => 0.70,
            MatchField::Phone | MatchField::Street | MatchField::Postcode => 0.80,
            MatchField::Email | MatchField::EmailDomain => 0.80,
        }
    }
}

/// How a rule compares one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Equal normalised values.
    Exact,
    /// A similarity in `[0, 1]` at or above the field's threshold.
    Fuzzy,
}

/// One field of a rule, as configured.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRaw {
    pub field: String,
    pub method: String,
    /// Least similarity for the rule to fire (fuzzy only); Salesforce's value by default.
    #[serde(default)]
    pub threshold: Option<f64>,
}

/// One matching rule, as configured: a conjunction of fields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleRaw {
    pub name: String,
    pub fields: Vec<FieldRaw>,
    /// The score when every field agrees perfectly (default 1.0). Lower it to send a rule's
    /// matches to review rather than auto-link.
    #[serde(default)]
    pub max_score: Option<f64>,
}

/// The `[matching]` configuration section. `Default` is the built-in rule set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchingRaw {
    pub auto_link_threshold: f64,
    pub review_threshold: f64,
    /// CLDR region for phones without a country code; `""` for none.
    pub default_region: String,
    /// Batch matching skips blocks with more rows than this (and counts them), or compares
    /// them by sorted neighbourhood when `oversized_window` is set.
    pub max_block_size: usize,
    /// With N > 0, batch matching compares each row of an oversized block with the next N
    /// rows, the block sorted by name (last, first, company, email), instead of skipping the
    /// block: N comparisons per row rather than none or the square of the block. Off (0) by
    /// default: on generated data with known duplicates it found almost only namesakes (at a
    /// million rows, 7 more true pairs and 15,800 more wrong ones at the review threshold).
    pub oversized_window: usize,
    pub email: EmailRules,
    /// Replaces the built-in rules when given. `exact_email` is always on.
    pub rules: Vec<RuleRaw>,
}

fn field(field: &str, method: &str) -> FieldRaw {
    FieldRaw { field: field.into(), method: method.into(), threshold: None }
}

fn rule(name: &str, fields: &[(&str, &str)], max_score: Option<f64>) -> RuleRaw {
    RuleRaw {
        name: name.into(),
        fields: fields.iter().map(|(f, m)| field(f, m)).collect(),
        max_score,
    }
}

impl MatchingRaw {
    /// The built-in rules, after Salesforce's standard lead matching equation (see the module
    /// documentation).
    pub fn builtin_rules() -> Vec<RuleRaw> {
        let names = [("first_name", "fuzzy"), ("last_name", "fuzzy")];
        let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
            names.iter().chain(extra).copied().collect()
        };
        vec![
            rule("name_email", &with(&[("email", "fuzzy")]), None),
            rule("name_phone", &with(&[("phone", "exact")]), None),
            rule("name_company", &with(&[("company", "fuzzy")]), None),
            rule(
                "name_street_postcode",
                &with(&[("street", "fuzzy"), ("postcode", "exact")]),
                None,
            ),
            rule("name_street_city", &with(&[("street", "fuzzy"), ("city", "fuzzy")]), Some(0.97)),
            rule("name_domain", &with(&[("email_domain", "exact")]), Some(0.95)),
        ]
    }
}

impl Default for MatchingRaw {
    fn default() -> Self {
        MatchingRaw {
            auto_link_threshold: 0.92,
            review_threshold: 0.75,
            default_region: "US".into(),
            max_block_size: 200,
            oversized_window: 0,
            email: EmailRules::default(),
            rules: MatchingRaw::builtin_rules(),
        }
    }
}

#[derive(Debug, Clone)]
struct Criterion {
    field: MatchField,
    method: Method,
    threshold: f64,
}

#[derive(Debug, Clone)]
struct Rule {
    fields: Vec<Criterion>,
    max_score: f64,
    uses: Uses,
}

/// Which identifiers a rule already compares, so its score is not also penalised for them.
#[derive(Debug, Clone, Copy, Default)]
struct Uses {
    names: bool,
    email: bool,
    phone: bool,
    company: bool,
}

/// A match decision: the best firing rule and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub value: f64,
    pub rule: String,
}

/// What to do with a scored pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    AutoLink,
    Review,
    NoMatch,
}

/// The name of the built-in exact-email rule, rule index 0.
pub const EXACT_EMAIL: &str = "exact_email";

/// The configured matching engine. Cheap to share; its only state is a memo of profiles
/// (see [`Matcher::profile_of`]), which never changes a result.
#[derive(Debug, Clone)]
pub struct Matcher {
    auto_link: f64,
    review: f64,
    region: Option<phonenumber::country::Id>,
    max_block_size: usize,
    oversized_window: usize,
    email_rules: EmailRules,
    rules: Vec<Rule>,
    /// Index 0 is [`EXACT_EMAIL`]; index `i + 1` is `rules[i]`.
    rule_names: Vec<String>,
    memo: ProfileMemo,
}

/// The canonical fields a record's profile is made of ([`Matcher::profile_of`]); the order of
/// [`Matcher::profile_of_values`]'s values.
pub const PROFILE_FIELDS: [Field; 5] =
    [Field::Email, Field::FirstName, Field::LastName, Field::Company, Field::Phone];

/// Most raw value sets [`ProfileMemo`] keeps; when full it starts again empty (a few hundred
/// bytes each, so a few tens of MiB at most).
const PROFILE_MEMO_MAX: usize = 1 << 17;

/// Profiles of the raw values `profile_of` saw last, keyed by those exact values. The
/// reconciler profiles the same person many times: a changed record once for its blocking
/// keys, once to score it and once for the new person's keys, and every person each time it
/// is a candidate for another record; phone parsing alone was 13% of a fuzzy backfill's CPU.
/// A profile is a pure function of the values and the matcher's fixed settings, so a
/// remembered one is the one that would be computed. Clones of a matcher share it.
#[derive(Clone, Default)]
struct ProfileMemo(Arc<Mutex<HashMap<Box<str>, Profile>>>);

impl fmt::Debug for ProfileMemo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are personal data: the size only.
        let len = self.0.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("ProfileMemo").field("len", &len).finish()
    }
}

impl ProfileMemo {
    /// An unambiguous key of the values: each is absent (`-`) or its byte length and itself.
    fn key(values: &[Option<&str>]) -> String {
        use std::fmt::Write as _;
        let mut key = String::with_capacity(values.iter().flatten().map(|v| v.len() + 4).sum());
        for v in values {
            match v {
                None => key.push('-'),
                // Writing to a String cannot fail.
                Some(v) => drop(write!(key, "{}:{v}", v.len())),
            }
        }
        key
    }

    fn get(&self, key: &str) -> Option<Profile> {
        self.0.lock().ok()?.get(key).cloned()
    }

    fn put(&self, key: String, profile: &Profile) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= PROFILE_MEMO_MAX {
                m.clear();
            }
            m.insert(key.into_boxed_str(), profile.clone());
        }
    }
}

impl Default for Matcher {
    fn default() -> Self {
        Matcher::from_raw(&MatchingRaw::default(), "matching")
            .expect("the built-in matching rules are valid (a test checks)")
    }
}

fn check_unit(key: String, v: f64) -> Result<f64, KeyError> {
    if v > 0.0 && v <= 1.0 { Ok(v) } else { Err(KeyError::new(key, "must be in (0, 1]")) }
}

impl Matcher {
    /// Validate `raw` (found under the config key `prefix`, e.g. `matching`).
    ///
    /// # Errors
    /// A [`KeyError`] naming the offending key, e.g. `matching.rules[1].fields[0].method`.
    pub fn from_raw(raw: &MatchingRaw, prefix: &str) -> Result<Matcher, KeyError> {
        let auto_link =
            check_unit(format!("{prefix}.auto_link_threshold"), raw.auto_link_threshold)?;
        let review = check_unit(format!("{prefix}.review_threshold"), raw.review_threshold)?;
        if review > auto_link {
            return Err(KeyError::new(
                format!("{prefix}.review_threshold"),
                "must not exceed auto_link_threshold",
            ));
        }
        let region = match raw.default_region.trim() {
            "" => None,
            code => Some(normalize::region(code).ok_or_else(|| {
                KeyError::new(
                    format!("{prefix}.default_region"),
                    format!("unknown region code {code:?} (use a CLDR code such as US or GB)"),
                )
            })?),
        };
        if raw.max_block_size < 2 {
            return Err(KeyError::new(format!("{prefix}.max_block_size"), "must be at least 2"));
        }
        let mut rules = Vec::with_capacity(raw.rules.len());
        let mut rule_names = vec![EXACT_EMAIL.to_string()];
        for (ri, r) in raw.rules.iter().enumerate() {
            let rkey = format!("{prefix}.rules[{ri}]");
            let name = r.name.trim();
            if name.is_empty() {
                return Err(KeyError::new(format!("{rkey}.name"), "must not be empty"));
            }
            if rule_names.iter().any(|n| n == name) {
                return Err(KeyError::new(
                    format!("{rkey}.name"),
                    format!("duplicate rule name {name:?}"),
                ));
            }
            if r.fields.is_empty() {
                return Err(KeyError::new(
                    format!("{rkey}.fields"),
                    "must name at least one field",
                ));
            }
            let mut fields = Vec::with_capacity(r.fields.len());
            let mut uses = Uses::default();
            for (fi, f) in r.fields.iter().enumerate() {
                let fkey = format!("{rkey}.fields[{fi}]");
                let field = MatchField::parse(&f.field).ok_or_else(|| {
                    KeyError::new(
                        format!("{fkey}.field"),
                        format!(
                            "unknown field {:?} (one of email, email_domain, first_name, \
                             last_name, company, phone, street, city, postcode)",
                            f.field
                        ),
                    )
                })?;
                if fields.iter().any(|c: &Criterion| c.field == field) {
                    return Err(KeyError::new(
                        format!("{fkey}.field"),
                        format!("{} appears twice in this rule", field.as_str()),
                    ));
                }
                let method = match f.method.as_str() {
                    "exact" => Method::Exact,
                    "fuzzy" => Method::Fuzzy,
                    other => {
                        return Err(KeyError::new(
                            format!("{fkey}.method"),
                            format!("unknown method {other:?} (exact or fuzzy)"),
                        ));
                    }
                };
                let threshold = match (method, f.threshold) {
                    (Method::Exact, Some(_)) => {
                        return Err(KeyError::new(
                            format!("{fkey}.threshold"),
                            "only fuzzy fields take a threshold",
                        ));
                    }
                    (Method::Exact, None) => 1.0,
                    (Method::Fuzzy, Some(t)) => check_unit(format!("{fkey}.threshold"), t)?,
                    (Method::Fuzzy, None) => field.default_fuzzy_threshold(),
                };
                // A rule on the domain alone still pays for two different mailboxes there.
                match field {
                    MatchField::Email => uses.email = true,
                    MatchField::Phone => uses.phone = true,
                    MatchField::Company => uses.company = true,
                    MatchField::FirstName | MatchField::LastName => uses.names = true,
                    _ => {}
                }
                fields.push(Criterion { field, method, threshold });
            }
            let max_score = match r.max_score {
                Some(s) => check_unit(format!("{rkey}.max_score"), s)?,
                None => 1.0,
            };
            rule_names.push(name.to_string());
            rules.push(Rule { fields, max_score, uses });
        }
        if rules.len() + 1 > usize::from(u16::MAX) {
            return Err(KeyError::new(format!("{prefix}.rules"), "too many rules"));
        }
        Ok(Matcher {
            auto_link,
            review,
            region,
            max_block_size: raw.max_block_size,
            oversized_window: raw.oversized_window,
            email_rules: raw.email,
            rules,
            rule_names,
            memo: ProfileMemo::default(),
        })
    }

    pub fn auto_link_threshold(&self) -> f64 {
        self.auto_link
    }

    pub fn review_threshold(&self) -> f64 {
        self.review
    }

    pub fn max_block_size(&self) -> usize {
        self.max_block_size
    }

    /// See [`MatchingRaw::oversized_window`].
    pub fn oversized_window(&self) -> usize {
        self.oversized_window
    }

    pub fn email_rules(&self) -> &EmailRules {
        &self.email_rules
    }

    pub fn default_region(&self) -> Option<phonenumber::country::Id> {
        self.region
    }

    /// The name of rule `index` as carried by [`Pair::rule`] (0 is [`EXACT_EMAIL`]).
    pub fn rule_name(&self, index: u16) -> &str {
        self.rule_names.get(usize::from(index)).map_or("unknown", String::as_str)
    }

    /// What to do with a pair that scored `score`.
    pub fn verdict(&self, score: f64) -> Verdict {
        if score >= self.auto_link {
            Verdict::AutoLink
        } else if score >= self.review {
            Verdict::Review
        } else {
            Verdict::NoMatch
        }
    }

    /// Normalise one person's raw values.
    pub fn profile(&self, parts: &Parts<'_>) -> Profile {
        let email = parts.email.and_then(|e| normalize::email(e, &self.email_rules));
        let first = parts.first_name.and_then(normalize::name);
        let canon = first
            .as_deref()
            .map(normalize::canonical_first_name)
            .filter(|c| Some(*c) != first.as_deref())
            .map(str::to_string);
        Profile::build([
            email,
            first,
            canon,
            parts.last_name.and_then(normalize::name),
            parts.company.and_then(normalize::company),
            parts.phone.and_then(|p| normalize::phone(p, self.region)),
            parts.street.and_then(street),
            parts.city.and_then(normalize::name),
            parts.postcode.and_then(postcode),
        ])
    }

    /// Normalise a record's canonical fields (which have no address). Remembers the profiles
    /// of recently seen values (see `ProfileMemo`): the reconciler asks for the same person's
    /// profile many times.
    pub fn profile_of(&self, fields: &Fields) -> Profile {
        self.profile_of_values(PROFILE_FIELDS.map(|f| fields.get(&f).map(String::as_str)))
    }

    /// How many profiles `profile_of` remembers now (at most `PROFILE_MEMO_MAX`, shared by
    /// clones), and the bytes of their keys and values (the map's own table not counted): for
    /// the bench's account of what the engine's memory holds.
    pub fn remembered_profiles(&self) -> (usize, usize) {
        self.memo
            .0
            .lock()
            .map_or((0, 0), |m| (m.len(), m.iter().map(|(k, p)| k.len() + p.buf.len()).sum()))
    }

    /// [`Matcher::profile_of`] of the values of [`PROFILE_FIELDS`] (in that order), for a
    /// caller that has them without a whole [`Fields`] map (the ledger scoring candidates reads
    /// these five from a stored person and skips the rest).
    pub fn profile_of_values(&self, values: [Option<&str>; 5]) -> Profile {
        let key = ProfileMemo::key(&values);
        let [email, first_name, last_name, company, phone] = values;
        let parts = Parts { email, first_name, last_name, company, phone, ..Parts::default() };
        if let Some(p) = self.memo.get(&key) {
            return p;
        }
        let p = self.profile(&parts);
        self.memo.put(key, &p);
        p
    }

    /// The blocking keys of a profile, as the daemon stores them in the ledger: two profiles
    /// are only compared when they share one. (Batch matching, [`Matcher::candidate_pairs`],
    /// splits `l:` and `c:` finer; see `for_each_batch_key`.)
    ///
    /// - `e:` the email with `+tag` and dots removed (so provider variants meet);
    /// - `p:` the phone;
    /// - `n:` the Soundex codes of the canonical first name and the last name, sorted (so
    ///   transposed names meet, and typos that keep the Soundex);
    /// - `m:` Soundex of the canonical first name + the last name's first three letters (a typo
    ///   that changes the last name's Soundex);
    /// - `l:` the last name + the canonical first name's initial (a typo that changes the
    ///   first name's Soundex);
    /// - `c:` the company's first token + the last name's initial;
    /// - `d:` a non-free email domain + the last name's initial.
    pub fn blocking_keys(&self, p: &Profile) -> Vec<String> {
        let mut keys = Vec::new();
        let mut buf = String::new();
        for_each_key(p, &mut buf, |k| keys.push(k.to_string()));
        keys
    }

    /// The score of the best rule that fires for `a` and `b`, or `None` when none fires.
    pub fn score(&self, a: &Profile, b: &Profile) -> Option<Score> {
        self.score_index(a, b)
            .map(|(value, rule)| Score { value, rule: self.rule_name(rule).to_string() })
    }

    /// [`Matcher::score`] with the rule as an index (see [`Matcher::rule_name`]), allocation-free.
    pub fn score_index(&self, a: &Profile, b: &Profile) -> Option<(f64, u16)> {
        if let (Some(ea), Some(eb)) = (a.email(), b.email())
            && ea == eb
        {
            return Some((1.0, 0));
        }
        let names = NamePair::new(a, b);
        // Built on first use: most compared pairs fail every rule on the names alone.
        let mut conflicts: Option<Conflicts> = None;
        let mut best: Option<(f64, u16)> = None;
        'rules: for (i, rule) in self.rules.iter().enumerate() {
            let mut value = rule.max_score;
            if rule.uses.names {
                value -= names.transposed_penalty();
            }
            for c in &rule.fields {
                let s = match c.field {
                    MatchField::FirstName => names.first(c.method),
                    MatchField::LastName => names.last(c.method),
                    MatchField::Email if c.method == Method::Fuzzy => {
                        let (Some(x), Some(y)) = (a.email(), b.email()) else { continue 'rules };
                        Some(email_similarity_of(a, b, x, y))
                    }
                    f => {
                        let (Some(x), Some(y)) = (a.get(f), b.get(f)) else { continue 'rules };
                        Some(similarity(f, c.method, x, y))
                    }
                };
                let Some(s) = s else { continue 'rules };
                if s < c.threshold {
                    continue 'rules;
                }
                value -= 1.0 - s;
            }
            value -= conflicts.get_or_insert_with(|| Conflicts::new(a, b)).penalty(rule.uses);
            let value = value.clamp(0.0, 1.0);
            let index = u16::try_from(i + 1).unwrap_or(u16::MAX);
            if best.is_none_or(|(v, _)| value > v) {
                best = Some((value, index));
            }
        }
        best
    }
}

/// How two profiles' names compare: straight, or transposed when that fits better.
struct NamePair<'p> {
    a: &'p Profile,
    b_first: Option<&'p str>,
    b_first_canon: Option<&'p str>,
    b_last: Option<&'p str>,
    transposed: bool,
    /// The fuzzy similarities, computed once per pair (every built-in rule asks for them).
    first_fuzzy: Option<f64>,
    last_fuzzy: Option<f64>,
}

impl<'p> NamePair<'p> {
    fn new(a: &'p Profile, b: &'p Profile) -> NamePair<'p> {
        let mut chosen = NamePair::choose(a, b);
        chosen.first_fuzzy = chosen.first_calc(Method::Fuzzy);
        chosen.last_fuzzy = chosen.last_calc(Method::Fuzzy);
        chosen
    }

    fn choose(a: &'p Profile, b: &'p Profile) -> NamePair<'p> {
        let straight = NamePair {
            a,
            b_first: b.first(),
            b_first_canon: b.first_canonical(),
            b_last: b.last(),
            transposed: false,
            first_fuzzy: None,
            last_fuzzy: None,
        };
        // Data entry swaps first and last name; Salesforce tries both orders too.
        let (Some(bf), Some(bl), Some(_), Some(_)) = (b.first(), b.last(), a.first(), a.last())
        else {
            return straight;
        };
        if bf == bl {
            return straight;
        }
        let swapped = NamePair {
            a,
            b_first: Some(bl),
            b_first_canon: Some(normalize::canonical_first_name(bl)),
            b_last: Some(bf),
            transposed: true,
            first_fuzzy: None,
            last_fuzzy: None,
        };
        let total = |n: &NamePair<'_>| {
            n.first_calc(Method::Fuzzy).unwrap_or(0.0) + n.last_calc(Method::Fuzzy).unwrap_or(0.0)
        };
        if total(&swapped) > total(&straight) + 0.05 { swapped } else { straight }
    }

    fn transposed_penalty(&self) -> f64 {
        if self.transposed { 0.03 } else { 0.0 }
    }

    fn first(&self, method: Method) -> Option<f64> {
        match method {
            Method::Fuzzy => self.first_fuzzy,
            Method::Exact => self.first_calc(method),
        }
    }

    fn last(&self, method: Method) -> Option<f64> {
        match method {
            Method::Fuzzy => self.last_fuzzy,
            Method::Exact => self.last_calc(method),
        }
    }

    fn first_calc(&self, method: Method) -> Option<f64> {
        let (x, y) = (self.a.first()?, self.b_first?);
        Some(match method {
            Method::Exact => f64::from(u8::from(x == y)),
            Method::Fuzzy => first_name_similarity(
                x,
                self.a.first_canonical().unwrap_or(x),
                y,
                self.b_first_canon.unwrap_or(y),
            ),
        })
    }

    fn last_calc(&self, method: Method) -> Option<f64> {
        let (x, y) = (self.a.last()?, self.b_last?);
        Some(match method {
            Method::Exact => f64::from(u8::from(x == y)),
            Method::Fuzzy => last_name_similarity(x, y),
        })
    }
}

/// Strong identifiers that disagree, which lower every rule that does not itself compare them.
struct Conflicts {
    phone: f64,
    email: f64,
    company: f64,
}

impl Conflicts {
    fn new(a: &Profile, b: &Profile) -> Conflicts {
        let phone = match (a.phone(), b.phone()) {
            (Some(x), Some(y)) if x != y && phone_similarity(x, y) < 0.8 => 0.05,
            _ => 0.0,
        };
        let email = match (a.email(), b.email()) {
            (Some(x), Some(y)) if x != y => {
                let same_domain = normalize::email_domain(x) == normalize::email_domain(y);
                let free = normalize::email_domain(x).is_none_or(normalize::is_free_mail);
                let s = email_similarity(x, y);
                if same_domain && !free {
                    // Two mailboxes at one employer: usually two people.
                    if s >= 0.9 { 0.08 } else { 0.15 }
                } else if s >= 0.9 {
                    0.0
                } else {
                    // A work and a personal address are common for one person.
                    0.03
                }
            }
            _ => 0.0,
        };
        let company = match (a.company(), b.company()) {
            (Some(x), Some(y)) if company_similarity(x, y) < 0.6 => {
                let related = [a, b].iter().any(|p| {
                    p.email_domain().is_some_and(|d| {
                        normalize::domain_matches_company(d, x)
                            && normalize::domain_matches_company(d, y)
                    })
                });
                if related { 0.0 } else { 0.05 }
            }
            _ => 0.0,
        };
        Conflicts { phone, email, company }
    }

    fn penalty(&self, uses: Uses) -> f64 {
        let mut p = 0.0;
        if !uses.phone {
            p += self.phone;
        }
        if !uses.email {
            p += self.email;
        }
        if !uses.company {
            p += self.company;
        }
        p
    }
}

fn jw(a: &str, b: &str) -> f64 {
    strsim::jaro_winkler(a, b)
}

fn similarity(f: MatchField, method: Method, x: &str, y: &str) -> f64 {
    if method == Method::Exact {
        return f64::from(u8::from(x == y));
    }
    match f {
        MatchField::Email => email_similarity(x, y),
        MatchField::Company => company_similarity(x, y),
        MatchField::Phone => phone_similarity(x, y),
        MatchField::Postcode => {
            if x == y {
                1.0
            } else if x.len() >= 3 && x.get(..3) == y.get(..3) {
                0.8
            } else {
                0.0
            }
        }
        MatchField::FirstName => first_name_similarity(
            x,
            normalize::canonical_first_name(x),
            y,
            normalize::canonical_first_name(y),
        ),
        MatchField::LastName => last_name_similarity(x, y),
        MatchField::Street => street_similarity(x, y),
        MatchField::EmailDomain | MatchField::City => jw(x, y),
    }
}

/// Street lines: Jaro-Winkler, but two different house numbers are two addresses ("86 Kings
/// Close" and "62 Kings Close" scored 0.9 on the letters they share).
fn street_similarity(x: &str, y: &str) -> f64 {
    if x == y {
        return 1.0;
    }
    let s = jw(x, y);
    let has_digit = |s: &str| s.chars().any(|c| c.is_ascii_digit());
    if has_digit(x) && has_digit(y) && !same_digits(x, y) { s.min(0.5) } else { s }
}

/// First names: equal, nickname of one another, initial of one another, or Jaro-Winkler.
fn first_name_similarity(x: &str, x_canon: &str, y: &str, y_canon: &str) -> f64 {
    if x == y {
        return 1.0;
    }
    if x_canon == y_canon {
        return 0.98;
    }
    let (xc, yc) = (x.chars().count(), y.chars().count());
    // "J" against "John" (Salesforce's "initials" method).
    if (xc == 1 || yc == 1) && x.chars().next() == y.chars().next() {
        return 0.9;
    }
    // Two different real names are two people ("Maria" and "Mario"); only a name that is not
    // a known one may be a typo of the other.
    if normalize::is_known_first_name(x) && normalize::is_known_first_name(y) {
        return 0.5;
    }
    let s = jw(x, y).max(jw(x_canon, y_canon));
    s.max(middle_name(x, y))
}

/// "Mary Ann" against "Mary": a middle name kept in one system only.
fn middle_name(x: &str, y: &str) -> f64 {
    if x.contains(' ') || y.contains(' ') {
        let (fx, fy) = (first_token(x), first_token(y));
        if fx == fy || normalize::canonical_first_name(fx) == normalize::canonical_first_name(fy) {
            return 0.92;
        }
    }
    0.0
}

/// Last names: Jaro-Winkler, with credit for equal Soundex (a vowel or same-sounding typo)
/// and for one name containing the other ("Smith" and "Smith Jones").
fn last_name_similarity(x: &str, y: &str) -> f64 {
    if x == y {
        return 1.0;
    }
    let mut s = jw(x, y);
    if x.chars().next() == y.chars().next() && soundex(x) == soundex(y) {
        s = s.max(0.9);
    }
    if (x.contains(' ') || y.contains(' ')) && tokens_contained(x, y) {
        s = s.max(0.92);
    }
    s
}

fn company_similarity(x: &str, y: &str) -> f64 {
    if x == y {
        return 1.0;
    }
    // Compared as iterators: this runs for most compared pairs, so no allocation.
    if x.chars().filter(|c| *c != ' ').eq(y.chars().filter(|c| *c != ' ')) {
        return 0.98;
    }
    let acronym_is = |long: &str, short: &str| {
        long.split(' ').filter_map(|t| t.chars().next()).eq(short.chars())
    };
    let (xt, yt) = (x.split(' ').count(), y.split(' ').count());
    if (xt >= 2 && yt == 1 && acronym_is(x, y)) || (yt >= 2 && xt == 1 && acronym_is(y, x)) {
        return 0.95;
    }
    if tokens_contained(x, y) {
        // Jaro-Winkler still credits a long shared beginning ("Harbor Energy Partners" and
        // "... Partners SL", a legal form the suffix list does not know).
        return jw(x, y).max(0.9);
    }
    // Word by word, as Salesforce aligns syllables rather than characters: Jaro-Winkler over
    // whole names scored "Ruby Construction Associates" against "Hawk Construction Associates"
    // 0.85, and "Riverside Telecom Partners" against "Riverside Software Services" 0.87.
    let s = token_overlap(x, y);
    // The first word is what tells a company from others in its trade (Ruby, Riverside);
    // names that share only later, generic words are two companies.
    if token_similarity(first_token(x), first_token(y)) == 0.0 { s.min(0.5) } else { s }
}

/// Two words as company words: equal 1, a typo of one another their Jaro-Winkler (≥ 0.9),
/// otherwise 0.
fn token_similarity(x: &str, y: &str) -> f64 {
    if x == y {
        return 1.0;
    }
    if x.chars().count() < 4 || y.chars().count() < 4 {
        return 0.0;
    }
    let s = jw(x, y);
    if s >= 0.9 { s } else { 0.0 }
}

/// Share of the letters of two names in words the other name has too (typos allowed, see
/// [`token_similarity`]), each word counted by its length.
fn token_overlap(x: &str, y: &str) -> f64 {
    let side = |from: &str, to: &str| -> (f64, f64) {
        let (mut hit, mut all) = (0.0, 0.0);
        for t in from.split(' ') {
            let len = t.chars().count() as f64;
            all += len;
            hit += len * to.split(' ').map(|u| token_similarity(t, u)).fold(0.0, f64::max);
        }
        (hit, all)
    };
    let ((hx, ax), (hy, ay)) = (side(x, y), side(y, x));
    if ax + ay == 0.0 { 0.0 } else { (hx + hy) / (ax + ay) }
}

/// Same E.164 number = 1; one wrong or two swapped digits = 0.85; otherwise 0.
fn phone_similarity(x: &str, y: &str) -> f64 {
    if x == y {
        return 1.0;
    }
    let (xb, yb) = (x.as_bytes(), y.as_bytes());
    if xb.len() != yb.len() {
        return 0.0;
    }
    // At most three differing positions are needed to decide; no allocation.
    let mut diff = [0usize; 3];
    let mut n = 0;
    for i in (0..xb.len()).filter(|i| xb[*i] != yb[*i]) {
        diff[n] = i;
        n += 1;
        if n == 3 {
            break;
        }
    }
    let close = match &diff[..n] {
        [_] => true,
        [i, j] => *j == i + 1 && xb[*i] == yb[*j] && xb[*j] == yb[*i],
        _ => false,
    };
    if close { 0.85 } else { 0.0 }
}

/// The local part without a `+tag` and dots, and the domain with googlemail read as gmail:
/// equal for the usual variants of one mailbox.
fn loose_email(e: &str) -> (String, &str) {
    let (local, domain) = e.rsplit_once('@').unwrap_or((e, ""));
    let local = local.split_once('+').map_or(local, |(base, _)| base);
    let local: String = local.chars().filter(|c| *c != '.').collect();
    let domain = if domain == "googlemail.com" { "gmail.com" } else { domain };
    (local, domain)
}

fn email_similarity(x: &str, y: &str) -> f64 {
    if x == y {
        return 1.0;
    }
    let ((lx, dx), (ly, dy)) = (loose_email(x), loose_email(y));
    match (dx == dy, lx == ly) {
        (true, true) => 0.97,
        // `jsmith` and `jsmith2`, `anna.lee84` and `anna_lee1985`: numbered mailboxes are how
        // a provider or an employer tells namesakes apart, so two that carry different numbers
        // are two mailboxes, not a typo of one.
        (true, false) if !same_digits(&lx, &ly) => 0.0,
        (true, false) => 0.9 * jw(&lx, &ly),
        // The same local part at two providers: plausibly one person.
        (false, true) if lx.chars().count() >= 6 => 0.85,
        (false, _) => 0.0,
    }
}

/// Value of an email below which the fuzzy email criterion never fires (its default
/// threshold is 0.80): what a cross-provider match of a name-made local part gets.
const NAME_MADE_LOCAL: f64 = 0.7;

/// [`email_similarity`] for two profiles: the same local part at two domains counts only when
/// it says more than the names do. `john.smith@acme.example` and `jsmith@gmail.com` against
/// `john.smith@globex.example` and `jsmith@yahoo.com` are what any two John Smiths get, so
/// a local part made of nothing but either person's names (and initials) is no evidence
/// beyond the names the rule already compares; one with something else (`jsmith1984`,
/// `ironfan`) still is.
fn email_similarity_of(a: &Profile, b: &Profile, x: &str, y: &str) -> f64 {
    let s = email_similarity(x, y);
    if s > 0.0 && s < 0.9 {
        let ((lx, dx), (ly, dy)) = (loose_email(x), loose_email(y));
        if dx != dy && lx == ly && (local_made_of_names(&lx, a) || local_made_of_names(&lx, b)) {
            return s.min(NAME_MADE_LOCAL);
        }
    }
    s
}

/// Whether two strings carry the same digits, in order (both none counts).
fn same_digits(x: &str, y: &str) -> bool {
    x.chars().filter(char::is_ascii_digit).eq(y.chars().filter(char::is_ascii_digit))
}

/// Whether a (loose) local part is one of the usual mailbox names made from `p`'s names:
/// first, last, both in either order, or one of them with the other's initial; separators
/// ignored, German transliteration (`ue` for `ü`) allowed. Digits are never name-made.
fn local_made_of_names(local: &str, p: &Profile) -> bool {
    // Letters only, and German transliteration undone, on the local part and on each candidate
    // as a whole (so `emmaevans` is squashed the same way on both sides).
    let squash = |s: &str| -> String {
        let letters: String = s.chars().filter(|c| c.is_alphabetic()).collect();
        letters.replace("ae", "a").replace("oe", "o").replace("ue", "u")
    };
    if local.chars().any(|c| c.is_ascii_digit()) {
        return false;
    }
    let local = squash(local);
    let letters = |s: &str| -> String { s.chars().filter(|c| c.is_alphabetic()).collect() };
    let Some(last) = p.last().map(letters) else { return false };
    if local.is_empty() || last.is_empty() {
        return false;
    }
    let li: String = last.chars().take(1).collect();
    if local == squash(&last) {
        return true;
    }
    [p.first(), p.slot(FIRST_CANON)].into_iter().flatten().map(letters).any(|first| {
        if first.is_empty() {
            return false;
        }
        let fi: String = first.chars().take(1).collect();
        [
            first.clone(),
            format!("{first}{last}"),
            format!("{last}{first}"),
            format!("{fi}{last}"),
            format!("{first}{li}"),
            format!("{last}{fi}"),
            format!("{li}{first}"),
        ]
        .iter()
        .any(|c| squash(c) == local)
    })
}

/// The first two space-separated tokens of `s` (all of it when it has fewer).
fn first_two_tokens(s: &str) -> &str {
    match s.match_indices(' ').nth(1) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

fn first_token(s: &str) -> &str {
    s.split(' ').next().unwrap_or(s)
}

/// Whether every token of the shorter name appears in the longer one.
fn tokens_contained(x: &str, y: &str) -> bool {
    let (short, long) = if x.len() <= y.len() { (x, y) } else { (y, x) };
    !short.is_empty() && short.split(' ').all(|t| long.split(' ').any(|l| l == t))
}

/// American Soundex of a normalised name (spaces ignored). Names that do not start with a
/// Latin letter get their first four characters instead, so non-Latin names still block.
fn soundex(name: &str) -> String {
    let mut chars = name.chars().filter(|c| *c != ' ');
    let Some(first) = chars.next() else { return String::new() };
    if !first.is_ascii_alphabetic() {
        return std::iter::once(first).chain(chars.take(3)).collect();
    }
    let code = |c: char| match c {
        'b' | 'f' | 'p' | 'v' => b'1',
        'c' | 'g' | 'j' | 'k' | 'q' | 's' | 'x' | 'z' => b'2',
        'd' | 't' => b'3',
        'l' => b'4',
        'm' | 'n' => b'5',
        'r' => b'6',
        'h' | 'w' => b'-',
        _ => b'0',
    };
    let mut out = vec![first.to_ascii_uppercase() as u8];
    let mut last = code(first);
    for c in chars {
        let d = code(c);
        if d == b'-' {
            // H and W do not separate equal codes.
            continue;
        }
        if d != b'0' && d != last {
            out.push(d);
            if out.len() == 4 {
                break;
            }
        }
        last = d;
    }
    out.resize(4, b'0');
    String::from_utf8(out).unwrap_or_default()
}

const STREET_WORDS: &[(&str, &str)] = &[
    ("apartment", "apt"),
    ("avenue", "ave"),
    ("boulevard", "blvd"),
    ("court", "ct"),
    ("drive", "dr"),
    ("east", "e"),
    ("highway", "hwy"),
    ("lane", "ln"),
    ("north", "n"),
    ("parkway", "pkwy"),
    ("place", "pl"),
    ("road", "rd"),
    ("south", "s"),
    ("square", "sq"),
    ("street", "st"),
    ("suite", "ste"),
    ("terrace", "ter"),
    ("west", "w"),
];

/// A street line: as a name, with the usual words abbreviated ("Main Street" = "main st").
fn street(raw: &str) -> Option<String> {
    let n = normalize::name(raw)?;
    let words: Vec<&str> = n
        .split(' ')
        .map(|w| STREET_WORDS.iter().find(|(long, _)| *long == w).map_or(w, |(_, short)| short))
        .collect();
    Some(words.join(" "))
}

/// A postcode: lower-case without spaces; a US ZIP+4 keeps its five-digit ZIP.
fn postcode(raw: &str) -> Option<String> {
    let n: String = normalize::name(raw)?.chars().filter(|c| *c != ' ').collect();
    if n.len() == 9 && n.bytes().all(|b| b.is_ascii_digit()) && raw.contains('-') {
        return Some(n[..5].to_string());
    }
    Some(n)
}

/// Call `f` with each blocking key of `p` (see [`Matcher::blocking_keys`]).
fn for_each_key(p: &Profile, buf: &mut String, mut f: impl FnMut(&str)) {
    use std::fmt::Write;
    let initial = |s: Option<&str>| s.and_then(|s| s.chars().next());
    if let Some(e) = p.email() {
        let (local, domain) = loose_email(e);
        buf.clear();
        let _ = write!(buf, "e:{local}@{domain}");
        f(buf);
    }
    if let Some(ph) = p.phone() {
        buf.clear();
        let _ = write!(buf, "p:{ph}");
        f(buf);
    }
    let last_sx = p.last().map(soundex);
    let first_sx = p.first_canonical().map(soundex);
    if let (Some(fsx), Some(lsx)) = (&first_sx, &last_sx) {
        // Sorted, so that a record with first and last name swapped has the same key.
        let (lo, hi) = if fsx <= lsx { (fsx, lsx) } else { (lsx, fsx) };
        buf.clear();
        let _ = write!(buf, "n:{lo}|{hi}");
        f(buf);
    }
    if let (Some(fsx), Some(last)) = (&first_sx, p.last()) {
        buf.clear();
        let _ = write!(buf, "m:{fsx}|");
        buf.extend(last.chars().take(3));
        f(buf);
    }
    if let Some(last) = p.last() {
        buf.clear();
        let _ = write!(buf, "l:{last}|");
        if let Some(c) = initial(p.first_canonical()) {
            buf.push(c);
        }
        f(buf);
    }
    if let (Some(c), Some(l)) = (p.company(), initial(p.last())) {
        buf.clear();
        let _ = write!(buf, "c:{}|{l}", first_token(c));
        f(buf);
    }
    if let (Some(d), Some(l)) = (p.get(MatchField::EmailDomain), initial(p.last())) {
        buf.clear();
        let _ = write!(buf, "d:{d}|{l}");
        f(buf);
    }
}

/// Call `f` with each blocking key batch matching uses (see [`Matcher::candidate_pairs`]).
///
/// The `e:`, `p:`, `n:`, `m:` and `d:` keys are the daemon's (see [`for_each_key`]); `l:` and
/// `c:` are split finer, because the daemon's versions (last name + first initial; company
/// token + last initial) gather a fixed share of all rows (common surnames, big employers),
/// so their blocks grew with the file and their pairs with its square: at 300,000 rows they
/// made 88% of the comparisons and most oversized blocks. Here each is two keys, each on two
/// letters of a name, chosen so that one typo (which the first letter survives, see
/// [`letter_pairs`]) still leaves one of the two keys equal:
///
/// - `l:` the last name + two letters of the first name, for the first name as written and,
///   when it differs, for its canonical form (a typo of one side's nickname);
/// - `c:` the company's first two tokens + two letters of the last name. Two tokens, because
///   first tokens are few (adjectives and place names: on generated data 140 first tokens
///   for 73,000 companies at 300,000 rows); legal suffixes are already gone, so "Acme Widgets
///   Inc" meets "ACME Widgets", but no longer "Acme". The first name is left out on purpose:
///   `c:` is what finds a nickname the table does not know (Drew and Andrew).
///
/// The daemon keeps its keys: they are stored in the ledger (`match_keys`), and its candidate
/// lookup skips blocks of more than 64 persons rather than growing with them.
fn for_each_batch_key(p: &Profile, buf: &mut String, mut f: impl FnMut(&str)) {
    use std::fmt::Write;
    for_each_key(p, buf, |k| {
        if !(k.starts_with("l:") || k.starts_with("c:")) {
            f(k);
        }
    });
    if let Some(last) = p.last() {
        if p.first().is_none() {
            // No first name: the last name alone, as the daemon's `l:` key has it.
            buf.clear();
            let _ = write!(buf, "l:{last}|");
            f(buf);
        }
        for first in [p.first(), p.slot(FIRST_CANON)].into_iter().flatten() {
            for pair in letter_pairs(first) {
                buf.clear();
                let _ = write!(buf, "l:{last}|{pair}");
                f(buf);
            }
        }
    }
    if let (Some(company), Some(last)) = (p.company(), p.last()) {
        let head = first_two_tokens(company);
        for pair in letter_pairs(last) {
            buf.clear();
            let _ = write!(buf, "c:{head}|{pair}");
            f(buf);
        }
    }
}

/// Two short codes of a name (spaces ignored): its first two letters (`ab`), and its first and
/// last letters (`a.z`). A typo that keeps the first letter changes at most one of them unless
/// the name has three letters or fewer.
fn letter_pairs(name: &str) -> [String; 2] {
    let mut letters = name.chars().filter(|c| *c != ' ');
    let first = letters.next();
    let second = letters.next();
    let last = letters.next_back().or(second);
    let code = |a: Option<char>, sep: &str, b: Option<char>| {
        let mut s = String::with_capacity(8);
        s.extend(a);
        s.push_str(sep);
        s.extend(b);
        s
    };
    [code(first, "", second), code(first, ".", last)]
}

/// FNV-1a, 64 bits: blocking keys are kept as hashes (a collision only merges two blocks,
/// costing comparisons, never a wrong match). The top three bits are replaced by the key's
/// kind (see [`KEY_KINDS`]), so that statistics can be kept per kind.
fn key_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let kind = s.bytes().next().and_then(|c| KEY_KINDS.bytes().position(|k| k == c)).unwrap_or(7);
    (h >> 3) | ((kind as u64) << 61)
}

/// The kinds of blocking key, by their prefix letter (see [`Matcher::blocking_keys`]); index
/// `i` is [`BlockStats::by_kind`]`[i]`, and 7 is "other".
pub const KEY_KINDS: &str = "epnmlcd";

fn key_kind(h: u64) -> usize {
    (h >> 61) as usize
}

/// One candidate pair from batch matching. In [`CandidatePairs`] `a < b` index one slice; in
/// [`CrossPairs::across`] `a` indexes the first set and `b` the second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub a: u32,
    pub b: u32,
    pub score: f32,
    /// Rule index; see [`Matcher::rule_name`].
    pub rule: u16,
}

/// What batch matching did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockStats {
    pub rows: u64,
    /// Blocking keys emitted (after removing a row's duplicates).
    pub keys: u64,
    /// Blocks with two or more rows.
    pub blocks: u64,
    /// Blocks with more than `max_block_size` rows: skipped, or compared in windows (see
    /// [`MatchingRaw::oversized_window`]).
    pub oversized_blocks: u64,
    /// Rows in those blocks (a row may count once per oversized block).
    pub oversized_rows: u64,
    /// Pairs scored.
    pub comparisons: u64,
    /// Pairs met inside scored blocks, including those scored in another shared block.
    pub pairs_in_blocks: u64,
    /// Rows in the largest scored block.
    pub largest_block: u64,
    /// Per key kind ([`KEY_KINDS`]): what blocking on that kind cost.
    pub by_kind: [KindStats; 8],
    /// Pairs scored in those windows (included in `comparisons`; a pair that meets in the
    /// windows of two oversized blocks counts twice, and is reported once).
    pub window_comparisons: u64,
}

/// What one kind of blocking key cost in a batch run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Pairs scored in blocks of this kind.
    pub comparisons: u64,
    /// Rows in the largest scored block of this kind.
    pub largest_block: u64,
    /// Blocks of this kind over `max_block_size`.
    pub oversized_blocks: u64,
}

/// Pairs within one set that scored at or above the review threshold, sorted by `(a, b)`.
#[derive(Debug, Clone, Default)]
pub struct CandidatePairs {
    pub pairs: Vec<Pair>,
    pub stats: BlockStats,
}

/// Pairs across two sets and within each, each list sorted by `(a, b)`.
#[derive(Debug, Clone, Default)]
pub struct CrossPairs {
    pub across: Vec<Pair>,
    pub within_a: Vec<Pair>,
    pub within_b: Vec<Pair>,
    pub stats: BlockStats,
}

/// Progress of batch matching: `(done, total)` in blocking-index entries.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

impl Matcher {
    /// Candidate duplicate pairs within `profiles`.
    ///
    /// # Panics
    /// If `profiles` has more than `u32::MAX` rows.
    pub fn candidate_pairs(&self, profiles: &[Profile]) -> CandidatePairs {
        self.candidate_pairs_with_progress(profiles, &mut |_, _| {})
    }

    /// [`Matcher::candidate_pairs`], reporting progress.
    ///
    /// # Panics
    /// If `profiles` has more than `u32::MAX` rows.
    pub fn candidate_pairs_with_progress(
        &self,
        profiles: &[Profile],
        progress: Progress<'_>,
    ) -> CandidatePairs {
        let mut pairs = Vec::new();
        let stats =
            self.run_blocks(profiles.len(), &|i| &profiles[i], progress, &mut |a, b, s, r| {
                pairs.push(Pair { a, b, score: s, rule: r });
            });
        pairs.sort_by_key(|p| (p.a, p.b));
        CandidatePairs { pairs, stats }
    }

    /// Candidate pairs across `a` and `b`, and within each.
    ///
    /// # Panics
    /// If the two sets together have more than `u32::MAX` rows.
    pub fn candidate_pairs_between(
        &self,
        a: &[Profile],
        b: &[Profile],
        progress: Progress<'_>,
    ) -> CrossPairs {
        let na = a.len();
        let get = |i: usize| if i < na { &a[i] } else { &b[i - na] };
        let mut out = CrossPairs::default();
        let na32 = u32::try_from(na).expect("fewer than 2^32 rows (documented panic)");
        out.stats = self.run_blocks(na + b.len(), &get, progress, &mut |x, y, s, r| {
            let (x, y) = (x.min(y), x.max(y));
            let pair = |a, b| Pair { a, b, score: s, rule: r };
            if y < na32 {
                out.within_a.push(pair(x, y));
            } else if x >= na32 {
                out.within_b.push(pair(x - na32, y - na32));
            } else {
                out.across.push(pair(x, y - na32));
            }
        });
        for v in [&mut out.across, &mut out.within_a, &mut out.within_b] {
            v.sort_by_key(|p| (p.a, p.b));
        }
        out
    }

    /// Block, compare and keep pairs at or above the review threshold. Memory: 16 bytes per
    /// (row, key) in the index plus 8 per key in row order; no per-pair state, because a pair
    /// that shares several blocks is scored only in the block of its smallest shared key (of
    /// normal size). Pairs that share only oversized blocks are scored in those blocks'
    /// windows, where they may meet twice: those few are deduplicated at the end.
    fn run_blocks<'p>(
        &self,
        n: usize,
        get: &(dyn Fn(usize) -> &'p Profile + Sync),
        progress: Progress<'_>,
        emit: &mut dyn FnMut(u32, u32, f32, u16),
    ) -> BlockStats {
        let n32 = u32::try_from(n).expect("fewer than 2^32 rows (documented panic)");
        let mut stats = BlockStats { rows: u64::from(n32), ..BlockStats::default() };
        // Row-order key hashes, sorted and deduplicated per row.
        let mut row_keys: Vec<u64> = Vec::with_capacity(n * 6);
        let mut row_ends: Vec<u32> = Vec::with_capacity(n + 1);
        row_ends.push(0);
        let mut buf = String::new();
        for i in 0..n {
            let start = row_keys.len();
            for_each_batch_key(get(i), &mut buf, |k| row_keys.push(key_hash(k)));
            row_keys[start..].sort_unstable();
            let mut w = start;
            for r in start..row_keys.len() {
                if w == start || row_keys[w - 1] != row_keys[r] {
                    row_keys[w] = row_keys[r];
                    w += 1;
                }
            }
            row_keys.truncate(w);
            row_ends.push(u32::try_from(w).unwrap_or(u32::MAX));
        }
        stats.keys = row_keys.len() as u64;
        let mut index: Vec<(u64, u32)> = Vec::with_capacity(row_keys.len());
        for i in 0..n {
            let (s, e) = (row_ends[i] as usize, row_ends[i + 1] as usize);
            let row = u32::try_from(i).unwrap_or(u32::MAX);
            index.extend(row_keys[s..e].iter().map(|h| (*h, row)));
        }
        index.sort_unstable();

        let total = index.len() as u64;
        let mut oversized: HashSet<u64> = HashSet::new();
        let mut start = 0;
        while start < index.len() {
            let h = index[start].0;
            let end = start + index[start..].partition_point(|(k, _)| *k == h);
            if end - start > self.max_block_size {
                oversized.insert(h);
                stats.oversized_blocks += 1;
                stats.oversized_rows += (end - start) as u64;
                stats.by_kind[key_kind(h)].oversized_blocks += 1;
            }
            start = end;
        }

        // Score blocks on a few threads: split the index at block boundaries into
        // contiguous ranges of about equal size; each thread keeps its own pairs.
        let threads = if index.len() < 50_000 {
            1
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(4)
        };
        let mut ranges = Vec::with_capacity(threads);
        let mut from = 0;
        for t in 1..=threads {
            let mut to = index.len() * t / threads;
            while to < index.len() && to > 0 && index[to].0 == index[to - 1].0 {
                to += 1;
            }
            let to = to.max(from);
            ranges.push(from..to);
            from = to;
        }
        let done = AtomicU64::new(0);
        let ctx = BlockCtx {
            index: &index,
            row_keys: &row_keys,
            row_ends: &row_ends,
            oversized: &oversized,
            get,
            done: &done,
        };
        let results: Vec<BlockResult> = std::thread::scope(|scope| {
            let handles: Vec<_> = ranges
                .into_iter()
                .map(|r| {
                    let ctx = &ctx;
                    scope.spawn(move || self.score_blocks(ctx, r))
                })
                .collect();
            while !handles.iter().all(std::thread::ScopedJoinHandle::is_finished) {
                progress(done.load(AtomicOrdering::Relaxed), total);
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        progress(total, total);
        let mut window_pairs = Vec::new();
        for mut r in results {
            window_pairs.append(&mut r.window_pairs);
            stats.window_comparisons += r.window_comparisons;
            stats.blocks += r.blocks;
            stats.comparisons += r.comparisons;
            stats.pairs_in_blocks += r.pairs_in_blocks;
            for (k, rk) in stats.by_kind.iter_mut().zip(r.by_kind) {
                k.comparisons += rk.comparisons;
                k.largest_block = k.largest_block.max(rk.largest_block);
            }
            stats.largest_block = stats.largest_block.max(r.largest_block);
            for (i, j, s, rule) in r.pairs {
                emit(i, j, s, rule);
            }
        }
        window_pairs.sort_unstable_by_key(|p| (p.0, p.1));
        window_pairs.dedup_by_key(|p| (p.0, p.1));
        for (i, j, s, rule) in window_pairs {
            emit(i, j, s, rule);
        }
        stats
    }
}

/// Shared, read-only state of one batch run, for the scoring threads.
struct BlockCtx<'a, 'p> {
    index: &'a [(u64, u32)],
    row_keys: &'a [u64],
    row_ends: &'a [u32],
    oversized: &'a HashSet<u64>,
    get: &'a (dyn Fn(usize) -> &'p Profile + Sync),
    done: &'a AtomicU64,
}

#[derive(Default)]
struct BlockResult {
    pairs: Vec<(u32, u32, f32, u16)>,
    blocks: u64,
    comparisons: u64,
    pairs_in_blocks: u64,
    largest_block: u64,
    by_kind: [KindStats; 8],
    /// Pairs from oversized blocks' windows: a pair may meet in several such windows.
    window_pairs: Vec<(u32, u32, f32, u16)>,
    window_comparisons: u64,
}

impl Matcher {
    /// Score every block that starts in `range` of the index.
    fn score_blocks(&self, ctx: &BlockCtx<'_, '_>, range: std::ops::Range<usize>) -> BlockResult {
        let keys_of = |row: u32| {
            let r = row as usize;
            &ctx.row_keys[ctx.row_ends[r] as usize..ctx.row_ends[r + 1] as usize]
        };
        let mut out = BlockResult::default();
        let index = &ctx.index[..range.end];
        let mut start = range.start;
        let mut reported = start;
        while start < index.len() {
            let h = index[start].0;
            let end = start + index[start..].partition_point(|(k, _)| *k == h);
            if end - start >= 2 && !ctx.oversized.contains(&h) {
                out.blocks += 1;
                let block = &index[start..end];
                let size = block.len() as u64;
                out.largest_block = out.largest_block.max(size);
                out.pairs_in_blocks += size * (size - 1) / 2;
                let kind = &mut out.by_kind[key_kind(h)];
                kind.largest_block = kind.largest_block.max(size);
                for (x, &(_, i)) in block.iter().enumerate() {
                    for &(_, j) in &block[x + 1..] {
                        if first_shared_key(keys_of(i), keys_of(j), ctx.oversized) != Some(h) {
                            continue;
                        }
                        out.comparisons += 1;
                        out.by_kind[key_kind(h)].comparisons += 1;
                        let (a, b) = ((ctx.get)(i as usize), (ctx.get)(j as usize));
                        if let Some((s, rule)) = self.score_index(a, b)
                            && s >= self.review
                        {
                            out.pairs.push((i, j, s as f32, rule));
                        }
                    }
                }
            } else if end - start >= 2 && self.oversized_window > 0 {
                self.score_window(ctx, &index[start..end], h, self.oversized_window, &mut out);
            }
            start = end;
            if start - reported >= 16_384 {
                ctx.done.fetch_add((start - reported) as u64, AtomicOrdering::Relaxed);
                reported = start;
            }
        }
        ctx.done.fetch_add((start - reported) as u64, AtomicOrdering::Relaxed);
        out
    }
}

impl Matcher {
    /// An oversized block, compared by sorted neighbourhood: its rows sorted by name (last,
    /// canonical first), then company and email, and each compared with the next `window`
    /// rows. Pairs that share a block of normal size are left to that block.
    fn score_window(
        &self,
        ctx: &BlockCtx<'_, '_>,
        block: &[(u64, u32)],
        h: u64,
        window: usize,
        out: &mut BlockResult,
    ) {
        let keys_of = |row: u32| {
            let r = row as usize;
            &ctx.row_keys[ctx.row_ends[r] as usize..ctx.row_ends[r + 1] as usize]
        };
        let by_name = |r: u32| {
            let p = (ctx.get)(r as usize);
            (p.last(), p.first_canonical(), p.company(), p.email())
        };
        let mut rows: Vec<u32> = block.iter().map(|(_, r)| *r).collect();
        rows.sort_by(|a, b| by_name(*a).cmp(&by_name(*b)).then(a.cmp(b)));
        for (x, &i) in rows.iter().enumerate() {
            for &j in rows[x + 1..].iter().take(window) {
                let (i, j) = (i.min(j), i.max(j));
                if first_shared_key(keys_of(i), keys_of(j), ctx.oversized).is_some() {
                    continue;
                }
                out.comparisons += 1;
                out.window_comparisons += 1;
                out.by_kind[key_kind(h)].comparisons += 1;
                let (a, b) = ((ctx.get)(i as usize), (ctx.get)(j as usize));
                if let Some((s, rule)) = self.score_index(a, b)
                    && s >= self.review
                {
                    out.window_pairs.push((i, j, s as f32, rule));
                }
            }
        }
    }
}

/// The smallest key hash two rows share outside oversized blocks: the one block in which the
/// pair is scored.
fn first_shared_key(a: &[u64], b: &[u64], oversized: &HashSet<u64>) -> Option<u64> {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                if !oversized.contains(&a[i]) {
                    return Some(a[i]);
                }
                i += 1;
                j += 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
