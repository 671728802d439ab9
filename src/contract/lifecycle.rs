//! The governed lifecycle: stages, the transition table that says which moves are allowed and
//! how, and the dates each stage was entered.
//!
//! Forward moves (further down the funnel) come from a qualification rule or from what a
//! system reports; which of the two may enter each stage is configurable. Backward moves, and
//! every move into or out of recycled and disqualified, happen only through a named transition
//! (recycle, disqualify, reopen) whose allowed `from -> to` pairs are configured and which
//! carries a reason code from that transition's configured list.
//!
//! Refusals print stage names, transition names and reason codes (all configuration), never a
//! person's data.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::Stage;

/// A person's stage in the governed lifecycle.
///
/// The funnel stages are ordered (`Subscriber` first, `Customer` last); `Recycled` (back to
/// marketing nurture) and `Disqualified` stand outside the funnel order. The derived `Ord` is
/// declaration order, for maps and stable output only: compare funnel positions with
/// [`LifecycleStage::funnel_rank`] and [`LifecycleStage::is_forward_move`], never with `<`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleStage {
    Subscriber,
    Lead,
    Mql,
    /// Sales accepted lead: sales has accepted the MQL and is working it.
    Sal,
    Sql,
    Opportunity,
    Customer,
    /// Handed back to marketing for nurture.
    Recycled,
    Disqualified,
}

impl LifecycleStage {
    pub const ALL: [LifecycleStage; 9] = [
        LifecycleStage::Subscriber,
        LifecycleStage::Lead,
        LifecycleStage::Mql,
        LifecycleStage::Sal,
        LifecycleStage::Sql,
        LifecycleStage::Opportunity,
        LifecycleStage::Customer,
        LifecycleStage::Recycled,
        LifecycleStage::Disqualified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleStage::Subscriber => "subscriber",
            LifecycleStage::Lead => "lead",
            LifecycleStage::Mql => "mql",
            LifecycleStage::Sal => "sal",
            LifecycleStage::Sql => "sql",
            LifecycleStage::Opportunity => "opportunity",
            LifecycleStage::Customer => "customer",
            LifecycleStage::Recycled => "recycled",
            LifecycleStage::Disqualified => "disqualified",
        }
    }

    pub fn parse(s: &str) -> Option<LifecycleStage> {
        LifecycleStage::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Position in the funnel (`Subscriber` = 0 ... `Customer` = 6); `None` for recycled and
    /// disqualified, which are off the funnel.
    pub fn funnel_rank(self) -> Option<u8> {
        match self {
            LifecycleStage::Subscriber => Some(0),
            LifecycleStage::Lead => Some(1),
            LifecycleStage::Mql => Some(2),
            LifecycleStage::Sal => Some(3),
            LifecycleStage::Sql => Some(4),
            LifecycleStage::Opportunity => Some(5),
            LifecycleStage::Customer => Some(6),
            LifecycleStage::Recycled | LifecycleStage::Disqualified => None,
        }
    }

    /// Whether `from -> to` is a forward move, the kind a rule or a system's report may make.
    ///
    /// Any funnel stage may move to any later funnel stage (a deal reported won is won even if
    /// nobody saw the SQL). A recycled person is back in nurture, at lead level: they move
    /// forward by qualifying again (MQL or later). A disqualified person moves nowhere except
    /// through a named transition (reopen). Nothing moves forward *into* recycled or
    /// disqualified: those are named transitions.
    pub fn is_forward_move(from: LifecycleStage, to: LifecycleStage) -> bool {
        let Some(to_rank) = to.funnel_rank() else { return false };
        match from {
            LifecycleStage::Disqualified => false,
            LifecycleStage::Recycled => to_rank >= 2,
            other => other.funnel_rank().is_some_and(|r| to_rank > r),
        }
    }

    /// The stage as the six-stage domain vocabulary (and so each system's mapping) knows it.
    ///
    /// The domain has no SAL: an accepted lead is still an MQL to a system that knows only the
    /// six stages, so `Sal` maps to `Stage::Mql`. Recycled and disqualified have no domain
    /// stage (`None`): what a system shows for them (HubSpot `other` or a lead status) is a
    /// mapping decision of the caller.
    pub fn to_domain(self) -> Option<Stage> {
        match self {
            LifecycleStage::Subscriber => Some(Stage::Subscriber),
            LifecycleStage::Lead => Some(Stage::Lead),
            LifecycleStage::Mql | LifecycleStage::Sal => Some(Stage::Mql),
            LifecycleStage::Sql => Some(Stage::Sql),
            LifecycleStage::Opportunity => Some(Stage::Opportunity),
            LifecycleStage::Customer => Some(Stage::Customer),
            LifecycleStage::Recycled | LifecycleStage::Disqualified => None,
        }
    }
}

/// Every domain stage has an exact lifecycle stage.
impl From<Stage> for LifecycleStage {
    fn from(s: Stage) -> LifecycleStage {
        match s {
            Stage::Subscriber => LifecycleStage::Subscriber,
            Stage::Lead => LifecycleStage::Lead,
            Stage::Mql => LifecycleStage::Mql,
            Stage::Sql => LifecycleStage::Sql,
            Stage::Opportunity => LifecycleStage::Opportunity,
            Stage::Customer => LifecycleStage::Customer,
        }
    }
}

impl fmt::Display for LifecycleStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The named transitions, the only way backwards or off the funnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedMove {
    /// Back to marketing for nurture.
    Recycle,
    /// Out of the funnel for good (unless reopened).
    Disqualify,
    /// Back into the funnel, or back a stage, after a mistake or a re-engagement.
    Reopen,
}

impl NamedMove {
    pub const ALL: [NamedMove; 3] = [NamedMove::Recycle, NamedMove::Disqualify, NamedMove::Reopen];

    pub fn as_str(self) -> &'static str {
        match self {
            NamedMove::Recycle => "recycle",
            NamedMove::Disqualify => "disqualify",
            NamedMove::Reopen => "reopen",
        }
    }

    pub fn parse(s: &str) -> Option<NamedMove> {
        NamedMove::ALL.into_iter().find(|n| n.as_str() == s)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for NamedMove {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason code from a named transition's configured list (`no_response`, `bad_data`, ...).
/// Configuration, not person data, so it may be logged and written to both systems.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReasonCode(String);

impl ReasonCode {
    /// A reason code: lowercase ASCII letters, digits and `_`, starting with a letter, at most
    /// 64 characters (so it fits any vendor picklist and reads the same everywhere).
    pub fn new(code: &str) -> Option<ReasonCode> {
        let ok = !code.is_empty()
            && code.len() <= 64
            && code.starts_with(|c: char| c.is_ascii_lowercase())
            && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        ok.then(|| ReasonCode(code.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a forward move comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A qualification rule evaluated by leadsync.
    Rule,
    /// A system reported the stage (or a status that implies it).
    Reported,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Rule => "rule",
            Source::Reported => "reported",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a move is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How<'r> {
    /// A qualification rule holds.
    Rule,
    /// A system reported the stage.
    Reported,
    /// A named transition with its reason code.
    Named { name: NamedMove, reason: &'r str },
}

/// How an allowed move was made, as the audit trail records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Rule,
    Reported,
    Named(NamedMove),
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Rule => f.write_str("rule"),
            Via::Reported => f.write_str("reported"),
            Via::Named(n) => f.write_str(n.as_str()),
        }
    }
}

/// An allowed move, ready to be applied and audited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: LifecycleStage,
    pub to: LifecycleStage,
    pub via: Via,
    /// Set exactly for named transitions.
    pub reason: Option<ReasonCode>,
}

impl Transition {
    /// Whether a system whose stage only moves forward (HubSpot `lifecyclestage`) must have its
    /// stage cleared before this move is pushed: the new domain stage is lower than the old
    /// one, or there is none (recycled, disqualified).
    pub fn needs_stage_cleared(&self) -> bool {
        match (self.from.to_domain(), self.to.to_domain()) {
            (Some(from), Some(to)) => to < from,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Why a move, or a disqualification, is refused. The Display text is a sentence for an
/// operator; it names stages, transitions and counts, never a person's data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("already at stage {stage}")]
    SameStage { stage: LifecycleStage },
    #[error(
        "{from} -> {to} is not a forward move: it needs a named transition{}",
        named_hint(.allowed_by)
    )]
    NeedsNamedTransition { from: LifecycleStage, to: LifecycleStage, allowed_by: Vec<NamedMove> },
    #[error("{to} may not be entered by a {by} move (see contract.lifecycle.forward)")]
    SourceNotAllowed { to: LifecycleStage, by: Source },
    #[error("the {name} transition does not allow {from} -> {to}")]
    NamedNotAllowed { name: NamedMove, from: LifecycleStage, to: LifecycleStage },
    #[error("the {name} transition needs a reason code from its configured list ({})", .allowed.join(", "))]
    UnknownReason { name: NamedMove, allowed: Vec<String> },
    #[error(
        "disqualification refused: {attempts} of {required} required contact attempts made; \
         recycle to nurture instead"
    )]
    TooFewAttempts { attempts: u32, required: u32 },
    #[error(
        "disqualification refused: contact attempts must span at least {required_days} days \
         before disqualifying; recycle to nurture instead"
    )]
    TooSoon { required_days: u32 },
}

fn named_hint(allowed_by: &[NamedMove]) -> String {
    if allowed_by.is_empty() {
        ", and no named transition allows it".to_string()
    } else {
        let names: Vec<&str> = allowed_by.iter().map(|n| n.as_str()).collect();
        format!(" ({}) with a reason code", names.join(" or "))
    }
}

/// Which sources may enter each stage by a forward move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardSources {
    /// Indexed by `LifecycleStage as usize`: (rule allowed, reported allowed).
    by_stage: [(bool, bool); 9],
}

impl Default for ForwardSources {
    /// Rules and reports may both enter every funnel stage.
    fn default() -> Self {
        ForwardSources { by_stage: [(true, true); 9] }
    }
}

impl ForwardSources {
    /// Only these sources may enter `stage` by a forward move.
    pub fn set(&mut self, stage: LifecycleStage, rule: bool, reported: bool) {
        self.by_stage[stage as usize] = (rule, reported);
    }

    pub fn allows(&self, stage: LifecycleStage, source: Source) -> bool {
        let (rule, reported) = self.by_stage[stage as usize];
        match source {
            Source::Rule => rule,
            Source::Reported => reported,
        }
    }
}

/// One named transition's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedRule {
    pub name: NamedMove,
    /// The `from -> to` pairs it allows.
    pub moves: Vec<(LifecycleStage, LifecycleStage)>,
    /// The reason codes it accepts (at least one).
    pub reasons: Vec<ReasonCode>,
}

/// The transition table: every allowed move, and why any other is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionTable {
    forward: ForwardSources,
    /// Indexed by `NamedMove::index`.
    named: [NamedRule; 3],
}

impl Default for TransitionTable {
    /// The table the issue describes: forward by rule or report everywhere; recycle from MQL
    /// through opportunity (a lost deal goes back to nurture); disqualify from lead through SQL
    /// and from recycled; reopen a disqualified person as a lead or into nurture.
    fn default() -> Self {
        use LifecycleStage as S;
        let codes = |list: &[&str]| {
            list.iter()
                .map(|c| ReasonCode::new(c).expect("built-in reason codes are well formed"))
                .collect()
        };
        TransitionTable {
            forward: ForwardSources::default(),
            named: [
                NamedRule {
                    name: NamedMove::Recycle,
                    moves: vec![
                        (S::Mql, S::Recycled),
                        (S::Sal, S::Recycled),
                        (S::Sql, S::Recycled),
                        (S::Opportunity, S::Recycled),
                    ],
                    reasons: codes(&[
                        "no_response",
                        "not_ready",
                        "bad_timing",
                        "sla_expired",
                        "lost_deal",
                        "disqualify_refused",
                    ]),
                },
                NamedRule {
                    name: NamedMove::Disqualify,
                    moves: vec![
                        (S::Lead, S::Disqualified),
                        (S::Mql, S::Disqualified),
                        (S::Sal, S::Disqualified),
                        (S::Sql, S::Disqualified),
                        (S::Recycled, S::Disqualified),
                    ],
                    reasons: codes(&[
                        "bad_data",
                        "not_a_fit",
                        "competitor",
                        "no_budget",
                        "duplicate",
                    ]),
                },
                NamedRule {
                    name: NamedMove::Reopen,
                    moves: vec![(S::Disqualified, S::Lead), (S::Disqualified, S::Recycled)],
                    reasons: codes(&["re_engaged", "disqualified_in_error"]),
                },
            ],
        }
    }
}

/// A transition table that cannot be built; the message names the named transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct TableError {
    pub name: NamedMove,
    pub problem: String,
}

impl TransitionTable {
    /// A table from forward sources and one rule per named transition (a missing one keeps
    /// its default).
    ///
    /// # Errors
    /// A [`TableError`] when a named transition lists the same rule twice, has no reason code,
    /// or allows a move that does not fit its name: recycle must end at `recycled`, disqualify
    /// at `disqualified`, reopen at a funnel stage (or take a disqualified person to
    /// `recycled`); and no move may stay where it is.
    pub fn new(
        forward: ForwardSources,
        named: Vec<NamedRule>,
    ) -> Result<TransitionTable, TableError> {
        let mut table = TransitionTable { forward, ..TransitionTable::default() };
        let mut seen = [false; 3];
        for rule in named {
            let name = rule.name;
            let err = |problem: String| TableError { name, problem };
            if std::mem::replace(&mut seen[name.index()], true) {
                return Err(err("configured twice".into()));
            }
            if rule.reasons.is_empty() {
                return Err(err("needs at least one reason code".into()));
            }
            for &(from, to) in &rule.moves {
                if from == to {
                    return Err(err(format!("{from} -> {to} does not move")));
                }
                let fits = match name {
                    NamedMove::Recycle => to == LifecycleStage::Recycled,
                    NamedMove::Disqualify => to == LifecycleStage::Disqualified,
                    NamedMove::Reopen => {
                        !matches!(to, LifecycleStage::Recycled | LifecycleStage::Disqualified)
                            || from == LifecycleStage::Disqualified
                    }
                };
                if !fits {
                    return Err(err(format!("{from} -> {to} does not fit a {name} transition")));
                }
            }
            table.named[name.index()] = rule;
        }
        Ok(table)
    }

    /// Whether `from -> to` is allowed when asked for `how`, and if so the transition to apply.
    ///
    /// # Errors
    /// A [`Refusal`] saying why: no move at all, a backward move without a named transition,
    /// a source the table does not allow for that stage, a pair the named transition does
    /// not allow, or a reason code outside its list.
    pub fn check(
        &self,
        from: LifecycleStage,
        to: LifecycleStage,
        how: How<'_>,
    ) -> Result<Transition, Refusal> {
        if from == to {
            return Err(Refusal::SameStage { stage: from });
        }
        match how {
            How::Rule | How::Reported => {
                let (source, via) = match how {
                    How::Rule => (Source::Rule, Via::Rule),
                    _ => (Source::Reported, Via::Reported),
                };
                if !LifecycleStage::is_forward_move(from, to) {
                    return Err(Refusal::NeedsNamedTransition {
                        from,
                        to,
                        allowed_by: self.named_allowing(from, to).collect(),
                    });
                }
                if !self.forward.allows(to, source) {
                    return Err(Refusal::SourceNotAllowed { to, by: source });
                }
                Ok(Transition { from, to, via, reason: None })
            }
            How::Named { name, reason } => {
                let rule = &self.named[name.index()];
                if !rule.moves.contains(&(from, to)) {
                    return Err(Refusal::NamedNotAllowed { name, from, to });
                }
                let Some(code) = rule.reasons.iter().find(|c| c.as_str() == reason) else {
                    return Err(Refusal::UnknownReason {
                        name,
                        allowed: rule.reasons.iter().map(|c| c.0.clone()).collect(),
                    });
                };
                Ok(Transition { from, to, via: Via::Named(name), reason: Some(code.clone()) })
            }
        }
    }

    /// The named transitions that allow `from -> to`.
    pub fn named_allowing(
        &self,
        from: LifecycleStage,
        to: LifecycleStage,
    ) -> impl Iterator<Item = NamedMove> + '_ {
        self.named.iter().filter(move |r| r.moves.contains(&(from, to))).map(|r| r.name)
    }

    /// One named transition's configuration.
    pub fn named(&self, name: NamedMove) -> &NamedRule {
        &self.named[name.index()]
    }

    pub fn forward(&self) -> &ForwardSources {
        &self.forward
    }

    /// Whether `code` is one of `name`'s reason codes.
    pub fn has_reason(&self, name: NamedMove, code: &str) -> bool {
        self.named[name.index()].reasons.iter().any(|c| c.as_str() == code)
    }
}

/// When a stage was entered: the first time, the latest time, and how many times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageEntry {
    #[serde(deserialize_with = "crate::domain::stamp::de")]
    pub first: DateTime<Utc>,
    #[serde(deserialize_with = "crate::domain::stamp::de")]
    pub last: DateTime<Utc>,
    pub times: u32,
}

/// Stage-entry dates of one person, stored by the ledger as JSON.
///
/// Each *entry* into a stage is stamped once: entering the stage the person is already in is
/// not an entry and changes nothing. Re-entering a stage after leaving it (MQL again after a
/// recycle) is a new entry: `last` moves to the new date and `times` counts it, while `first`
/// keeps the original date, so reports can measure both first-time conversion and the
/// current cycle. Stages skipped by a forward move (lead straight to SQL) are not stamped:
/// nobody saw them entered, and inventing dates would bend time-in-stage figures; reports
/// count "reached X or later" from the stages that are stamped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageDates {
    current: Option<LifecycleStage>,
    entries: BTreeMap<LifecycleStage, StageEntry>,
}

impl StageDates {
    /// Stamp an entry into `stage` at `at`. Returns whether anything changed (false when the
    /// person is already in `stage`).
    pub fn enter(&mut self, stage: LifecycleStage, at: DateTime<Utc>) -> bool {
        if self.current == Some(stage) {
            return false;
        }
        self.current = Some(stage);
        self.entries
            .entry(stage)
            .and_modify(|e| {
                e.last = at;
                e.times = e.times.saturating_add(1);
            })
            .or_insert(StageEntry { first: at, last: at, times: 1 });
        true
    }

    /// Stamp the entry a transition makes.
    pub fn apply(&mut self, transition: &Transition, at: DateTime<Utc>) -> bool {
        self.enter(transition.to, at)
    }

    /// The stage of the latest entry.
    pub fn current(&self) -> Option<LifecycleStage> {
        self.current
    }

    pub fn get(&self, stage: LifecycleStage) -> Option<&StageEntry> {
        self.entries.get(&stage)
    }

    /// Every stamped stage, in lifecycle order.
    pub fn iter(&self) -> impl Iterator<Item = (LifecycleStage, &StageEntry)> {
        self.entries.iter().map(|(s, e)| (*s, e))
    }
}

#[cfg(test)]
mod tests;
