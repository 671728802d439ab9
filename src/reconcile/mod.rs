//! The reconciler: a pure function from (ledger state, change, rules, now) to a decision.
//!
//! **Architecture Invariant:** this module does no IO. The ledger loads a [`Context`], calls
//! [`reconcile`], and applies the [`Decision`] in the same transaction.
//!
//! - **Matching**, in order: the record's open link; the ledger id leadsync stamped on it; the
//!   normalised email; then the fuzzy matching engine over the persons that share a blocking
//!   key with the record. A fuzzy score at or above the auto-link threshold links; between the
//!   review and auto-link thresholds the record becomes a new person and the pair goes to the
//!   review queue (nothing is merged silently).
//! - **News**: only what changed at the vendor since leadsync last knew the record counts. A
//!   field that went blank at the vendor does not blank the person. Values that predate one of
//!   leadsync's own pushes are not news.
//! - **Three-way resolution**: each link remembers, per field, the last value the record and
//!   the person agreed on. A change on one side only is taken (unless a `prefer` rule says the
//!   preferred system's value stands); changes on both sides since the agreement are a
//!   conflict, settled by the field's [`FieldRule`] and written to the audit trail, or parked in
//!   the review queue under `review`. A record seen for the first time by an existing person
//!   only fills blanks, except from a preferred system.
//! - **Email of a second record**: of several records of one person in a system with unique
//!   emails (HubSpot), only the primary's email is the person's; an email edited on another
//!   is that record's own address (kept in its link), so the primary is never asked to take
//!   an address another record of the same system holds.
//! - **Identity lifecycle**: a deleted record's link closes with a tombstone (the person is not
//!   created there again unless configured; one deleted before any person held its email
//!   leaves a tombstone by that email, which the person later made from it takes, and its
//!   identity, which a person made later takes when the fuzzy rules tie them at the auto-link
//!   threshold: the order of the two reads does not matter); a record
//!   merged away at the vendor closes its link
//!   and the survivor's person absorbs its person; a converted lead closes its link and the
//!   contact takes over.
//! - **Pushes** are diffs against what leadsync knows each record holds, to the primary record
//!   of each system (its oldest open link; other records of the same system get opt-outs
//!   only), so an unchanged person produces no writes (no echo); stages are never pushed
//!   backwards and opt-outs never undone.

pub mod lifecycle;
mod merge;
mod rules;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use merge::merge_persons;
pub use rules::{CreatePolicy, FieldRule, Rules, SystemRules};

use crate::domain::{Change, Field, Fields, RecordFate, RemoteId, Stage, SystemName};
use crate::identity::matcher::Verdict;

/// Where a resolved value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub system: String,
    /// The value the rule took (absent in ledgers written before values were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub at: DateTime<Utc>,
    pub rule: String,
}

/// One person as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LeadState {
    pub id: String,
    pub fields: Fields,
    pub provenance: BTreeMap<Field, Provenance>,
    /// Open links, oldest first, except that links made by a fuzzy rule come after the others
    /// (per system, the first is the primary record; see [`is_primary`]).
    pub links: Vec<LinkState>,
    /// Fields with an open conflict in the review queue: not pushed until decided.
    pub held: BTreeSet<Field>,
    /// Systems where one of this person's records was deleted.
    pub tombstoned: BTreeSet<SystemName>,
    /// Systems where the other person of an open duplicate review has a record: if the two
    /// are one human, a create there would be a second record of them (see
    /// [`Rules::review_holds_creates`]).
    pub review_holds: BTreeSet<SystemName>,
}

/// One linked remote record and what leadsync knows it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkState {
    pub system: SystemName,
    pub remote: RemoteId,
    pub known: Fields,
    /// Per field, the last value this record and its person agreed on.
    pub agreed: Fields,
    /// Fields leadsync last pushed to it, and when that push ended (leadsync's clock, after
    /// the vendor's answer): a read that started before then may predate the push.
    pub pushed: Fields,
    pub pushed_at: Option<DateTime<Utc>>,
    /// A fuzzy matching rule made this link. The ledger lists such links after the others
    /// (see [`is_primary`]); [`add_link`] keeps a person's links in that order in memory too.
    pub by_rule: bool,
    /// When a human last typed an address on this record while it was a second record of its
    /// person in a system with unique emails (the record's own address, not the person's;
    /// see [`promoted_address_carries_on`]).
    pub own_email_at: Option<DateTime<Utc>>,
}

impl LinkState {
    pub fn new(system: SystemName, remote: RemoteId) -> LinkState {
        LinkState {
            system,
            remote,
            known: Fields::new(),
            agreed: Fields::new(),
            pushed: Fields::new(),
            pushed_at: None,
            by_rule: false,
            own_email_at: None,
        }
    }
}

/// Add a link where the ledger will list it when the person is next loaded: after the links
/// made by exact keys when a fuzzy rule made it, else after the other exact ones (the ledger
/// orders by `reason LIKE 'matched_rule:%', id`). Planning pushes against another order would
/// pick another primary record than the one every later load sees: a record linked by email in
/// the same batch as a fuzzy-linked one would lose its primacy for one plan, and that plan
/// writes the person's email onto the fuzzy-linked contact (HubSpot: 409, a dead letter).
pub(crate) fn add_link(links: &mut Vec<LinkState>, link: LinkState) {
    let at = if link.by_rule { links.len() } else { links.partition_point(|k| !k.by_rule) };
    links.insert(at, link);
}

/// A closed link of the changed record (its record was deleted, merged away or converted).
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedLink {
    pub lead_id: String,
    pub reason: String,
}

/// Everything the ledger found that is relevant to one change.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The person already linked to this record.
    pub linked: Option<LeadState>,
    /// The person whose ledger id the record carries.
    pub by_key: Option<LeadState>,
    /// The person with the same normalised email (oldest first when several).
    pub by_email: Option<LeadState>,
    /// Persons sharing a blocking key with the record, for fuzzy matching.
    pub candidates: Vec<LeadState>,
    /// When the record has no open link: its last closed one.
    pub closed: Option<ClosedLink>,
    /// The person linked to the record this change's fate names (merge survivor, converted
    /// contact), when it is not the changed record's own person.
    pub related: Option<LeadState>,
    /// Whether the record the fate names is linked at all (to anyone).
    pub related_linked: bool,
    /// With a contract: the governed lifecycle of the persons above, by ledger id (a person
    /// missing here has none yet).
    pub lifecycles: BTreeMap<String, lifecycle::PersonLifecycle>,
    /// Systems where a record holding this change's email was deleted before any person
    /// held that email: a person made from this change is tombstoned there.
    pub deleted_by_email: BTreeSet<SystemName>,
    /// Records deleted before leadsync found their person that share a blocking key with this
    /// change (the fuzzy twin of `deleted_by_email`): a person made from this change that the
    /// fuzzy rules tie to one at or above the auto-link threshold is tombstoned there.
    pub deleted_lookalikes: Vec<DeletedRecord>,
}

/// A record deleted at a vendor before leadsync found its person, as the ledger keeps it: its
/// identity fields only (the matcher's profile fields).
#[derive(Debug, Clone, PartialEq)]
pub struct DeletedRecord {
    pub system: SystemName,
    pub remote: RemoteId,
    pub fields: Fields,
}

/// A deleted record ([`DeletedRecord`]) a new person takes as its own, by a fuzzy rule at or
/// above the auto-link threshold: the ledger opens and closes its link with a tombstone, as
/// when the delete is read after the person exists.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletedMatch {
    pub system: SystemName,
    pub remote: RemoteId,
    pub rule: String,
    pub score: f64,
}

/// How a record came to be linked.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkReason {
    Existing,
    NewPerson,
    MatchedLedgerKey,
    MatchedEmail,
    /// A fuzzy rule scored at or above the auto-link threshold.
    MatchedRule {
        rule: String,
        score: f64,
    },
    /// The vendor restored a deleted record: its link reopens.
    Restored,
}

impl LinkReason {
    pub fn as_str(&self) -> String {
        match self {
            LinkReason::Existing => "existing".into(),
            LinkReason::NewPerson => "new_person".into(),
            LinkReason::MatchedLedgerKey => "matched_ledger_key".into(),
            LinkReason::MatchedEmail => "matched_email".into(),
            LinkReason::MatchedRule { rule, .. } => format!("matched_rule:{rule}"),
            LinkReason::Restored => "restored".into(),
        }
    }
}

/// A write the outbox should hold for one (person, system, record).
#[derive(Debug, Clone, PartialEq)]
pub struct PushIntent {
    pub system: SystemName,
    /// `None` for a create.
    pub remote: Option<RemoteId>,
    pub object_type: String,
    pub fields: Fields,
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub kind: &'static str,
    pub detail: serde_json::Value,
}

/// A decision leadsync leaves to a person.
#[derive(Debug, Clone, PartialEq)]
pub enum ReviewIntent {
    /// The changed record's person may be the same human as `other`.
    Duplicate { other: String, score: f64, rule: String },
    /// Both sides changed `field` since they last agreed, and its rule is `review`.
    Conflict { field: Field, current: Option<String>, incoming: String, system: SystemName },
}

/// What to do with the changed record's link besides linking it.
#[derive(Debug, Clone, PartialEq)]
pub struct CloseLink {
    /// `deleted`, `merged` or `converted`.
    pub reason: &'static str,
    /// Leave a tombstone so the person is not created there again.
    pub tombstone: bool,
}

/// What to write, all in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub lead_id: String,
    pub is_new_lead: bool,
    pub lead_fields: Fields,
    pub provenance: BTreeMap<Field, Provenance>,
    /// Whether the person's fields changed at all.
    pub lead_changed: bool,
    /// A link to create (or reopen) for the changed record (`None` when linked already).
    pub new_link: Option<LinkReason>,
    /// Close the changed record's link.
    pub close_link: Option<CloseLink>,
    /// Link another record of the same system to this person (merge survivor, converted
    /// contact), with the reason.
    pub link_other: Option<(RemoteId, &'static str)>,
    /// A person to fold into this one (their links move here, they become a tombstone).
    pub absorb: Option<String>,
    /// The vendor merged the changed record, its system's primary, into this other open link
    /// of the same person: the survivor takes the merged record's place among the person's
    /// links (it holds the merged record's address now; see [`take_primacy`]).
    pub take_place: Option<RemoteId>,
    /// What leadsync now knows the changed record holds, and what it agrees on with its person.
    pub record_known: Fields,
    pub record_agreed: Fields,
    /// A new [`LinkState::own_email_at`] for the changed record (`None` keeps what it had).
    pub record_own_email_at: Option<DateTime<Utc>>,
    /// The person's blocking keys, when they are new or changed.
    pub match_keys: Option<Vec<String>>,
    pub pushes: Vec<PushIntent>,
    pub reviews: Vec<ReviewIntent>,
    pub audit: Vec<AuditEntry>,
    /// With a contract: the person's governed lifecycle to store.
    pub lifecycle: Option<lifecycle::Governed>,
    /// Deleted records this new person takes as its own (see [`DeletedMatch`]).
    pub deleted_matches: Vec<DeletedMatch>,
}

/// Decide what one observed change means. `new_lead_id` is used only when the change is a new
/// person (ids are minted outside so that this stays pure and deterministic). `None`: the
/// change concerns nobody (a merged-away or converted record nobody links, or a stale state of
/// one whose link is closed).
pub fn reconcile(
    ctx: &Context,
    system: &SystemName,
    change: &Change,
    rules: &Rules,
    new_lead_id: &str,
    now: DateTime<Utc>,
) -> Option<Decision> {
    match &change.fate {
        // A record merged away or converted does not come back: a live state of it read
        // before that happened is stale, and its values must not reach anyone (a deleted one
        // can be restored, so its live state reopens the link).
        RecordFate::Live
            if ctx.linked.is_none()
                && ctx
                    .closed
                    .as_ref()
                    .is_some_and(|c| c.reason == "merged" || c.reason == "converted") =>
        {
            None
        }
        RecordFate::Live => Some(reconcile_live(ctx, system, change, rules, new_lead_id, now)),
        RecordFate::Deleted => {
            // A record deleted before leadsync ever read it still was its person's (found by
            // the ledger id it carries or its email): its link opens and closes at once, with
            // the tombstone, so the person is not created there again, as if it had been read.
            // Failing those, a fuzzy rule at or above the auto-link threshold (a second
            // contact made under another address and deleted before leadsync read it): the
            // same link the live record would have had.
            let fuzzy = || match best_fuzzy(ctx, change, rules) {
                Some((l, score, rule, Verdict::AutoLink)) => {
                    Some((l, Some(LinkReason::MatchedRule { rule, score })))
                }
                _ => None,
            };
            let (lead, opened) = match (&ctx.linked, &ctx.closed, &ctx.by_key, &ctx.by_email) {
                (Some(l), ..) => (l, None),
                (None, None, Some(l), _) => (l, Some(LinkReason::MatchedLedgerKey)),
                (None, None, None, Some(l)) => (l, Some(LinkReason::MatchedEmail)),
                (None, None, None, None) => fuzzy()?,
                _ => return None,
            };
            let mut d = unchanged(lead, change);
            if let Some(reason) = opened {
                d.audit.push(link_event("link", system, &change.remote, &reason.as_str()));
                d.new_link = Some(reason);
            }
            d.close_link = Some(CloseLink { reason: "deleted", tombstone: true });
            d.audit.push(link_event("unlinked", system, &change.remote, "deleted"));
            let mut remaining = lead.clone();
            remaining.links.retain(|k| !(&k.system == system && k.remote == change.remote));
            remaining.tombstoned.insert(system.clone());
            if is_primary(lead, system, &change.remote) {
                promoted_address_carries_on(&mut d, &mut remaining, system, rules);
            }
            d.pushes = plan_pushes(&remaining, rules);
            Some(d)
        }
        RecordFate::MergedInto { survivor } => {
            let lead = ctx.linked.as_ref()?;
            let survivor =
                RemoteId { object_type: change.remote.object_type.clone(), id: survivor.clone() };
            let mut d = unchanged(lead, change);
            d.close_link = Some(CloseLink { reason: "merged", tombstone: false });
            d.audit.push(link_event("unlinked", system, &change.remote, "merged"));
            fold_related(
                &mut d,
                ctx,
                lead,
                system,
                &change.remote,
                survivor,
                "merge_survivor",
                rules,
                now,
                change.modified_at,
            );
            Some(d)
        }
        RecordFate::ConvertedTo { remote } => {
            // The lead's last state still counts, then the contact takes its place.
            if ctx.linked.is_none() && ctx.closed.is_some() {
                return None;
            }
            let mut d = reconcile_live(ctx, system, change, rules, new_lead_id, now);
            let lead = decided_state(ctx, &d, system, change);
            d.close_link = Some(CloseLink { reason: "converted", tombstone: false });
            d.audit.push(link_event("unlinked", system, &change.remote, "converted"));
            fold_related(
                &mut d,
                ctx,
                &lead,
                system,
                &change.remote,
                remote.clone(),
                "converted_from_lead",
                rules,
                now,
                change.modified_at,
            );
            Some(d)
        }
    }
}

/// A decision that changes nothing about the person.
fn unchanged(lead: &LeadState, change: &Change) -> Decision {
    Decision {
        lead_id: lead.id.clone(),
        is_new_lead: false,
        lead_fields: lead.fields.clone(),
        provenance: lead.provenance.clone(),
        lead_changed: false,
        new_link: None,
        close_link: None,
        link_other: None,
        absorb: None,
        take_place: None,
        record_known: change.fields.clone(),
        record_agreed: Fields::new(),
        record_own_email_at: None,
        match_keys: None,
        pushes: Vec::new(),
        reviews: Vec::new(),
        audit: Vec::new(),
        lifecycle: None,
        deleted_matches: Vec::new(),
    }
}

fn link_event(
    kind: &'static str,
    system: &SystemName,
    remote: &RemoteId,
    reason: &str,
) -> AuditEntry {
    AuditEntry {
        kind,
        detail: serde_json::json!({
            "system": system.as_str(),
            "remote": remote.to_string(),
            "reason": reason,
        }),
    }
}

/// The person as the decision leaves it (before any link closes): with every record they
/// had, also when the change was tied to them by a fuzzy rule (a candidate). Without that a
/// converted lead matched only by a rule planned its pushes as if the person had no records
/// (convergence seed 1672: creates at both vendors, and the update its contact needed lost).
fn decided_state(ctx: &Context, d: &Decision, system: &SystemName, change: &Change) -> LeadState {
    let base = ctx
        .linked
        .as_ref()
        .or(ctx.by_key.as_ref())
        .or(ctx.by_email.as_ref())
        .or_else(|| ctx.candidates.iter().find(|c| c.id == d.lead_id));
    let mut lead = base.cloned().unwrap_or_default();
    lead.id = d.lead_id.clone();
    lead.fields = d.lead_fields.clone();
    lead.provenance = d.provenance.clone();
    if !lead.links.iter().any(|k| &k.system == system && k.remote == change.remote) {
        let mut link = LinkState::new(system.clone(), change.remote.clone());
        link.known = d.record_known.clone();
        link.by_rule = matches!(d.new_link, Some(LinkReason::MatchedRule { .. }));
        add_link(&mut lead.links, link);
    }
    lead
}

/// The changed record's link closes and another record (the merge survivor, the converted
/// contact) carries the person on: link it here, or fold its person into this one.
#[allow(clippy::too_many_arguments, reason = "one call site per fate; each argument is distinct")]
fn fold_related(
    d: &mut Decision,
    ctx: &Context,
    lead: &LeadState,
    system: &SystemName,
    closing: &RemoteId,
    other: RemoteId,
    reason: &'static str,
    rules: &Rules,
    now: DateTime<Utc>,
    changed_at: DateTime<Utc>,
) {
    let mut remaining = lead.clone();
    remaining.links.retain(|k| !(&k.system == system && &k.remote == closing));
    match &ctx.related {
        Some(q) if q.id != lead.id => {
            // The record that carries on belongs to another person: they are one human.
            let mut merged = merge_persons(q, &remaining, rules, now);
            if reason == "converted_from_lead" {
                let lead_values = d.record_known.clone();
                newer_values_carry_on(&mut merged, &remaining, q, rules, Some(&lead_values));
            }
            // A person this very change would have created is not written at all: the
            // record's link (opened and closed at once, for the trail) goes to `q`.
            if !d.is_new_lead {
                d.absorb = Some(lead.id.clone());
            }
            d.is_new_lead = false;
            d.lead_id = q.id.clone();
            d.lead_fields = merged.fields.clone();
            d.provenance = merged.provenance.clone();
            d.lead_changed = true;
            d.match_keys =
                Some(rules.matcher.blocking_keys(&rules.matcher.profile_of(&merged.fields)));
            d.audit.push(AuditEntry {
                kind: "persons_merged",
                detail: serde_json::json!({
                    "into": q.id, "from": lead.id, "reason": reason,
                    "system": system.as_str(), "remote": other.to_string(),
                }),
            });
            d.pushes = plan_pushes(&merged, rules);
        }
        None if !ctx.related_linked => {
            d.link_other = Some((other.clone(), reason));
            d.audit.push(link_event("link", system, &other, reason));
            let mut with = remaining;
            add_link(&mut with.links, LinkState::new(system.clone(), other));
            d.pushes = plan_pushes(&with, rules);
        }
        // The record that carries on is this person's own (the ledger leaves `related` empty
        // then, and says it is linked).
        _ if remaining.links.iter().any(|k| &k.system == system && k.remote == other) => {
            if reason == "merge_survivor" {
                if take_primacy(lead, &mut remaining, system, closing, &other) {
                    d.take_place = Some(other.clone());
                }
                // A survivor that was the primary already keeps the address it had as the
                // primary: the merge brings the person no new one, and a newer email taken
                // elsewhere since must not give way to it (convergence seed 161: a second
                // contact merged into the primary; the merge, read after a later edit of
                // the survivor, is dated after the human's Salesforce email edit).
                if !is_primary(lead, system, &other) {
                    take_record_address(
                        d,
                        &mut remaining,
                        system,
                        &other,
                        rules,
                        changed_at,
                        "merge_survivor",
                    );
                }
            }
            d.pushes = plan_pushes(&remaining, rules);
        }
        _ => {
            d.pushes = plan_pushes(&remaining, rules);
        }
    }
}

/// A vendor merged the system's primary record of a person into another record of the same
/// person (convergence seed 63: leadsync's contact, linked by email, merged into a hand-made
/// duplicate linked by a fuzzy rule, with an older fuzzy-linked duplicate beside it): the
/// survivor takes the merged record's place, as its position and kind of link, so that it is
/// the primary now. Otherwise the next record in line became primary and was sent the
/// person's address, which HubSpot refuses (409) while the survivor holds it as an additional
/// email. Returns whether the order changed (the ledger then swaps the two links' places).
fn take_primacy(
    lead: &LeadState,
    remaining: &mut LeadState,
    system: &SystemName,
    closing: &RemoteId,
    survivor: &RemoteId,
) -> bool {
    if !is_primary(lead, system, closing) || is_primary(remaining, system, survivor) {
        return false;
    }
    let Some(at) = lead.links.iter().position(|k| &k.system == system && &k.remote == closing)
    else {
        return false;
    };
    let Some(from) =
        remaining.links.iter().position(|k| &k.system == system && &k.remote == survivor)
    else {
        return false;
    };
    let mut link = remaining.links.remove(from);
    link.by_rule = lead.links[at].by_rule;
    remaining.links.insert(at.min(remaining.links.len()), link);
    true
}

/// The system's primary record of a person with unique emails was deleted, and the next
/// record of that system takes its place. Its address is its own (a second record's,
/// [`LinkState::own_email_at`]). When a human typed it there after the person's email was last
/// set, it is the newest address the human gave: the person takes it, rather than writing the
/// deleted record's address over it (convergence seed 2345: the primary contact deleted and
/// the next one's email edited in one poll pass; the edit, read while that contact was still a
/// second record, was then undone). An address it held from before (a duplicate made under
/// another address) stays its own, and the person's is written there as before.
fn promoted_address_carries_on(
    d: &mut Decision,
    remaining: &mut LeadState,
    system: &SystemName,
    rules: &Rules,
) {
    if !matches!(rules.rule(Field::Email), FieldRule::MostRecent) {
        return;
    }
    let Some((next, typed_at)) =
        primary(remaining, system).and_then(|k| Some((k.remote.clone(), k.own_email_at?)))
    else {
        return;
    };
    take_record_address(d, remaining, system, &next, rules, typed_at, "record_email");
}

/// A vendor merge in a system with unique emails keeps the survivor's own address (HubSpot
/// lists the other as an additional email). When the survivor, another record of the same
/// person, is now the system's primary record, its address is the person's: writing the
/// person's old one over it would undo what the vendor kept, and an email a human typed on
/// the survivor while it was a second record (kept as its own) would be lost. The same for
/// the record that takes a deleted primary's place ([`promoted_address_carries_on`]), with
/// `at` when its address was typed and `rule` naming why in provenance and audit.
#[allow(clippy::too_many_arguments, reason = "two call sites; each argument is distinct")]
fn take_record_address(
    d: &mut Decision,
    remaining: &mut LeadState,
    system: &SystemName,
    survivor: &RemoteId,
    rules: &Rules,
    at: DateTime<Utc>,
    rule: &'static str,
) {
    if !rules.system(system).is_some_and(|s| s.unique_email)
        || !is_primary(remaining, system, survivor)
    {
        return;
    }
    let Some(link) = remaining.links.iter().find(|k| &k.system == system && &k.remote == survivor)
    else {
        return;
    };
    let Some(address) = link.known.get(&Field::Email).filter(|e| !e.trim().is_empty()).cloned()
    else {
        return;
    };
    let current = remaining.fields.get(&Field::Email).cloned();
    if same_value(Field::Email, current.as_ref(), &address) {
        return;
    }
    // An address the person took after the merge (typed in another system, read before the
    // merge was) is newer than anything the survivor kept: it stays the person's and goes to
    // the survivor like any newer value.
    if remaining.provenance.get(&Field::Email).is_some_and(|p| p.at > at) {
        return;
    }
    remaining.fields.insert(Field::Email, address.clone());
    d.lead_fields.insert(Field::Email, address.clone());
    let prov = Provenance {
        system: system.to_string(),
        value: Some(address.clone()),
        at,
        rule: rule.into(),
    };
    remaining.provenance.insert(Field::Email, prov.clone());
    d.provenance.insert(Field::Email, prov);
    d.lead_changed = true;
    d.match_keys = Some(rules.matcher.blocking_keys(&rules.matcher.profile_of(&d.lead_fields)));
    d.audit.push(AuditEntry {
        kind: "fields",
        detail: serde_json::json!({
            "system": system.as_str(),
            "changes": [{
                "field": "email", "from": current, "to": address, "rule": rule,
            }],
        }),
    });
}

/// A converted contact read before its lead's conversion became a person of its own, from
/// the lead's values at conversion; the lead's person may have moved on since (an email
/// changed in another system). Under `most recent` the newer value stands, whichever person
/// held it, so that folding the two does not revert an edit. A value the contact holds only
/// because the conversion copied it from the lead (`copied`: the lead's last state) is as old
/// as the lead's, however late the contact was made: the lead's person's value stands
/// (convergence seed 394: an email typed at HubSpot, then the lead converted before leadsync
/// wrote it there; the contact's copy of the old address, dated at the conversion, undid it).
pub(crate) fn newer_values_carry_on(
    merged: &mut LeadState,
    lead_person: &LeadState,
    contact_person: &LeadState,
    rules: &Rules,
    copied: Option<&Fields>,
) {
    for (field, value) in &lead_person.fields {
        if rules.rule(*field) != FieldRule::MostRecent {
            continue;
        }
        // An address the folded person took from a record in a system with unique emails,
        // where the surviving person has a record already: that record is now a second one
        // there, and its address its own; the person's stays on the primary (convergence
        // seed 746: a HubSpot duplicate's address, newer, became the person's on a rescore
        // fold, and HubSpot refused it on the primary, 409).
        if *field == Field::Email
            && let Some(from) = lead_person.provenance.get(field)
            && rules.system(&SystemName(from.system.clone())).is_some_and(|s| s.unique_email)
            && contact_person.links.iter().any(|k| k.system.as_str() == from.system)
        {
            continue;
        }
        let at = |p: &LeadState| p.provenance.get(field).map(|pr| pr.at);
        let contact_value = contact_person.fields.get(field);
        let a_copy = copied.and_then(|c| c.get(field)).is_some_and(|lead_value| {
            contact_value.is_some_and(|v| same_value(*field, Some(v), lead_value))
        });
        if a_copy || at(lead_person).is_some_and(|l| at(contact_person).is_none_or(|c| l > c)) {
            merged.fields.insert(*field, value.clone());
            if let Some(p) = lead_person.provenance.get(field) {
                merged.provenance.insert(*field, p.clone());
            }
        }
    }
}

/// The candidate the fuzzy rules score best for this record (at the review threshold or
/// above), with its score, rule and verdict. Ties go to the older person id for determinism.
fn best_fuzzy<'a>(
    ctx: &'a Context,
    change: &Change,
    rules: &Rules,
) -> Option<(&'a LeadState, f64, String, Verdict)> {
    let profile = rules.matcher.profile_of(&change.fields);
    let mut fuzzy: Option<(&LeadState, f64, String, Verdict)> = None;
    for cand in &ctx.candidates {
        let Some(score) = rules.matcher.score(&profile, &rules.matcher.profile_of(&cand.fields))
        else {
            continue;
        };
        let verdict = rules.matcher.verdict(score.value);
        if verdict == Verdict::NoMatch {
            continue;
        }
        let better = fuzzy
            .as_ref()
            .is_none_or(|(l, s, _, _)| score.value > *s || (score.value == *s && cand.id < l.id));
        if better {
            fuzzy = Some((cand, score.value, score.rule, verdict));
        }
    }
    fuzzy
}

fn reconcile_live(
    ctx: &Context,
    system: &SystemName,
    change: &Change,
    rules: &Rules,
    new_lead_id: &str,
    now: DateTime<Utc>,
) -> Decision {
    let mut audit = Vec::new();
    let mut reviews = Vec::new();
    let restored =
        ctx.linked.is_none() && ctx.closed.as_ref().is_some_and(|c| c.reason == "deleted");
    let fuzzy =
        if ctx.linked.is_none() && ctx.by_key.is_none() && ctx.by_email.is_none() && !restored {
            best_fuzzy(ctx, change, rules)
        } else {
            None
        };
    let (lead, reason) = match (&ctx.linked, &ctx.by_key, &ctx.by_email, &fuzzy) {
        (Some(l), _, _, _) => (Some(l), LinkReason::Existing),
        (None, Some(l), _, _) => (Some(l), LinkReason::MatchedLedgerKey),
        (None, None, Some(l), _) => (Some(l), LinkReason::MatchedEmail),
        (None, None, None, Some((l, score, rule, Verdict::AutoLink))) => {
            (Some(*l), LinkReason::MatchedRule { rule: rule.clone(), score: *score })
        }
        _ if restored => (None, LinkReason::Restored),
        _ => (None, LinkReason::NewPerson),
    };
    if let Some((cand, score, rule, Verdict::Review)) = &fuzzy {
        reviews.push(ReviewIntent::Duplicate {
            other: cand.id.clone(),
            score: *score,
            rule: rule.clone(),
        });
    }
    // A restored record's person is the one its closed link names.
    let restored_id = restored.then(|| ctx.closed.as_ref().map(|c| c.lead_id.clone())).flatten();

    let this_link = lead
        .and_then(|l| l.links.iter().find(|k| &k.system == system && k.remote == change.remote));
    let incoming = news_in(change, this_link);

    let mut fields = lead.map(|l| l.fields.clone()).unwrap_or_default();
    let mut provenance = lead.map(|l| l.provenance.clone()).unwrap_or_default();
    // A record linked without ever being read (a converted contact, a merge survivor) is
    // seen for the first time too.
    let first_sight = this_link.is_none_or(is_unread);
    let existing_person = lead.is_some();
    let mut changed_detail = Vec::new();
    let from_primary = lead.is_none_or(|l| is_primary(l, system, &change.remote));
    let unique_email = rules.system(system).is_some_and(|s| s.unique_email);
    // The first read of a record linked unread as a vendor merge's survivor (the only such
    // records in a system with unique emails): the vendor kept the survivor's own address, so
    // it is the person's, as when the survivor was read before the merge
    // ([`take_record_address`]); leadsync had not written it (see [`plan_pushes`]).
    let survivor_first_read = unique_email && from_primary && this_link.is_some_and(is_unread);
    let mut own_email_at = None;
    for (field, value) in &incoming {
        if *field == Field::Email && survivor_first_read {
            let current = fields.get(field).cloned();
            if !value.trim().is_empty() && !same_value(*field, current.as_ref(), value) {
                provenance.insert(
                    *field,
                    Provenance {
                        system: system.to_string(),
                        value: Some(value.clone()),
                        at: change.modified_at,
                        rule: "merge_survivor".into(),
                    },
                );
                changed_detail.push(serde_json::json!({
                    "field": field.as_str(), "from": current, "to": value, "rule": "merge_survivor",
                }));
                fields.insert(*field, value.clone());
            }
            continue;
        }
        // In a system with unique emails, a second record of the person holds an address of
        // its own: an email typed there changes only what that record holds (its link), never
        // the person's email. Taking it would write it to the primary record of the same
        // system, which HubSpot refuses while the second contact holds it (409). Elsewhere
        // (Salesforce) the edit moves the person as on any record.
        if *field == Field::Email && existing_person && !from_primary && unique_email {
            // Audited when the record's own address changed, not when it is first seen.
            if this_link.and_then(|k| k.known.get(field)).is_some_and(|k| k != value) {
                own_email_at = Some(change.modified_at);
                audit.push(AuditEntry {
                    kind: "record_email",
                    detail: serde_json::json!({
                        "system": system.as_str(), "remote": change.remote.to_string(),
                        "reason": "not_primary",
                    }),
                });
            }
            continue;
        }
        let rule = rules.rule(*field);
        let current = fields.get(field).cloned();
        let base = this_link.and_then(|k| k.agreed.get(field));
        let ctx_field = FieldCtx {
            rule: &rule,
            current: current.as_deref(),
            incoming: value,
            base: base.map(String::as_str),
            first_sight: first_sight && existing_person,
            from: system,
            from_primary,
            preferred_value: lead.and_then(|l| preferred_value(l, &rule, field)),
            changed_at: change.modified_at,
            current_at: provenance.get(field).map(|p| p.at),
        };
        match resolve(&ctx_field) {
            Resolution::Keep => {}
            Resolution::Take { conflict } => {
                if current.as_deref() != Some(value.as_str()) {
                    if conflict {
                        audit.push(AuditEntry {
                            kind: "conflict",
                            detail: serde_json::json!({
                                "field": field.as_str(), "rule": rule.to_string(),
                                "kept": serde_json::Value::Null, "took": value,
                                "over": current, "system": system.as_str(),
                            }),
                        });
                    }
                    provenance.insert(
                        *field,
                        Provenance {
                            system: system.to_string(),
                            value: Some(value.clone()),
                            at: change.modified_at,
                            rule: rule.to_string(),
                        },
                    );
                    changed_detail.push(serde_json::json!({
                        "field": field.as_str(), "from": current, "to": value, "rule": rule.to_string(),
                    }));
                    fields.insert(*field, value.clone());
                }
            }
            Resolution::KeepConflict => {
                audit.push(AuditEntry {
                    kind: "conflict",
                    detail: serde_json::json!({
                        "field": field.as_str(), "rule": rule.to_string(),
                        "kept": current, "refused": value, "system": system.as_str(),
                    }),
                });
            }
            Resolution::Park => {
                reviews.push(ReviewIntent::Conflict {
                    field: *field,
                    current: current.clone(),
                    incoming: value.clone(),
                    system: system.clone(),
                });
            }
        }
    }
    if let Some(stage_change) = apply_status_floor(&mut fields, &mut provenance, rules, now) {
        changed_detail.push(stage_change);
    }
    let governed = rules.contract.as_deref().map(|contract| {
        let lead_id = lead.map(|l| l.id.as_str()).or(restored_id.as_deref()).unwrap_or(new_lead_id);
        let input = lifecycle::Input {
            contract,
            status_implies: &rules.status_implies_stage,
            prior: ctx.lifecycles.get(lead_id),
            lead_id,
            incoming: &incoming,
            system,
            changed_at: change.modified_at,
            custom: &change.custom,
            now,
        };
        lifecycle::govern(&input, &mut fields, &mut provenance, &mut changed_detail, &mut audit)
    });

    let lead_changed = lead.map(|l| l.fields != fields).unwrap_or(true);
    let lead_id =
        lead.map(|l| l.id.clone()).or(restored_id).unwrap_or_else(|| new_lead_id.to_string());
    if reason != LinkReason::Existing {
        let mut detail = serde_json::json!({
            "system": system.as_str(),
            "remote": change.remote.to_string(),
            "reason": reason.as_str(),
        });
        if let LinkReason::MatchedRule { rule, score } = &reason {
            detail["rule"] = serde_json::json!(rule);
            detail["score"] = serde_json::json!(score);
        }
        audit.push(AuditEntry { kind: "link", detail });
    }
    for r in &reviews {
        if let ReviewIntent::Duplicate { other, score, rule } = r {
            audit.push(AuditEntry {
                kind: "possible_duplicate",
                detail: serde_json::json!({
                    "other": other, "score": score, "rule": rule,
                    "system": system.as_str(), "remote": change.remote.to_string(),
                }),
            });
        }
    }
    if !changed_detail.is_empty() && lead.is_some() {
        audit.push(AuditEntry {
            kind: "fields",
            detail: serde_json::json!({ "system": system.as_str(), "changes": changed_detail }),
        });
    }

    // What the changed record holds now: the snapshot, except fields whose snapshot predates
    // a push of ours, where our pushed value is the better knowledge.
    let mut record_known = change.fields.clone();
    if let Some(link) = this_link
        && link.pushed_at.is_some_and(|p| change.fetched_at < p)
    {
        for (f, v) in &link.pushed {
            record_known.insert(*f, v.clone());
        }
    }
    let mut record_agreed = this_link.map(|k| k.agreed.clone()).unwrap_or_default();
    for (f, v) in &record_known {
        if same_value(*f, fields.get(f), v) {
            record_agreed.insert(*f, v.clone());
        }
    }

    // Every record of this person, with what we know of it after this change.
    let mut state = lead.cloned().unwrap_or_default();
    state.id = lead_id.clone();
    state.fields = fields.clone();
    for r in &reviews {
        if let ReviewIntent::Conflict { field, .. } = r {
            state.held.insert(*field);
        }
    }
    if restored {
        state.tombstoned.remove(system);
    }
    for r in &reviews {
        if let (ReviewIntent::Duplicate { .. }, Some((cand, ..))) = (r, &fuzzy) {
            state.review_holds.extend(cand.links.iter().map(|k| k.system.clone()));
        }
    }
    let mut deleted_matches = Vec::new();
    if lead.is_none() && !restored {
        // A human deleted a record with this address before leadsync knew anyone by it: the
        // person made now is not created there (the ledger turns those into its tombstones).
        state.tombstoned.extend(ctx.deleted_by_email.iter().cloned());
        // Or one under another address that the fuzzy rules tie to this person: read after
        // the person existed, its delete would have linked it by the same rule and left the
        // same tombstone (the `Deleted` arm), so the order of the two reads does not matter.
        deleted_matches = deleted_lookalikes(ctx, system, change, &fields, rules, &mut audit);
        state.tombstoned.extend(deleted_matches.iter().map(|m| m.system.clone()));
    }
    match state.links.iter_mut().find(|k| &k.system == system && k.remote == change.remote) {
        Some(k) => {
            k.known = record_known.clone();
            k.agreed = record_agreed.clone();
            k.own_email_at = own_email_at.or(k.own_email_at);
        }
        None => {
            let mut link = LinkState::new(system.clone(), change.remote.clone());
            link.known = record_known.clone();
            link.agreed = record_agreed.clone();
            link.by_rule = matches!(reason, LinkReason::MatchedRule { .. });
            add_link(&mut state.links, link);
        }
    }
    let pushes = plan_pushes(&state, rules);
    let keys_before = lead.map(|l| identity_fields(&l.fields));
    let match_keys = (keys_before.as_ref() != Some(&identity_fields(&fields)))
        .then(|| rules.matcher.blocking_keys(&rules.matcher.profile_of(&fields)));

    Decision {
        lead_id,
        is_new_lead: lead.is_none() && !restored,
        lead_fields: fields,
        provenance,
        lead_changed,
        new_link: (reason != LinkReason::Existing).then_some(reason),
        close_link: None,
        link_other: None,
        absorb: None,
        take_place: None,
        record_known,
        record_agreed,
        record_own_email_at: own_email_at,
        match_keys,
        pushes,
        reviews,
        audit,
        lifecycle: governed,
        deleted_matches,
    }
}

/// The deleted records ([`Context::deleted_lookalikes`]) a new person with `fields` takes as
/// its own: those the fuzzy rules score at or above the auto-link threshold, each audited
/// (`deleted_match`: rule, score, the deleted record) so that `leadsync trace` says why the
/// person was not created there. One in the review band is audited only
/// (`possible_deleted_match`): nothing is tombstoned on a maybe, and the create goes ahead
/// (a deleted record has no person a duplicate review could name). The changed record's own
/// earlier delete (a restore leadsync never linked) is not a lookalike of itself.
fn deleted_lookalikes(
    ctx: &Context,
    system: &SystemName,
    change: &Change,
    fields: &Fields,
    rules: &Rules,
    audit: &mut Vec<AuditEntry>,
) -> Vec<DeletedMatch> {
    if ctx.deleted_lookalikes.is_empty() {
        return Vec::new();
    }
    let profile = rules.matcher.profile_of(fields);
    let mut out = Vec::new();
    for del in &ctx.deleted_lookalikes {
        if &del.system == system && del.remote == change.remote {
            continue;
        }
        let Some(score) = rules.matcher.score(&profile, &rules.matcher.profile_of(&del.fields))
        else {
            continue;
        };
        let kind = match rules.matcher.verdict(score.value) {
            Verdict::AutoLink => "deleted_match",
            Verdict::Review => "possible_deleted_match",
            Verdict::NoMatch => continue,
        };
        audit.push(AuditEntry {
            kind,
            detail: serde_json::json!({
                "system": del.system.as_str(),
                "remote": del.remote.to_string(),
                "rule": score.rule,
                "score": score.value,
                "tombstoned": kind == "deleted_match",
            }),
        });
        if kind == "deleted_match" {
            out.push(DeletedMatch {
                system: del.system.clone(),
                remote: del.remote.clone(),
                rule: score.rule,
                score: score.value,
            });
        }
    }
    out
}

/// The fields blocking keys are made of.
fn identity_fields(f: &Fields) -> Vec<Option<&String>> {
    [Field::Email, Field::FirstName, Field::LastName, Field::Company, Field::Phone]
        .iter()
        .map(|k| f.get(k))
        .collect()
}

/// Whether leadsync linked this record without ever reading it or writing to it (a merge
/// survivor or converted contact that no person held yet). The opt-out such a record is sent
/// before its first read ([`plan_pushes`]) does not count as knowing it: its first read is
/// still a first sight (convergence seed 4967: a converted second lead's contact, sent the
/// opt-out, then read with the lead's old address, dated at the conversion, which `most
/// recent` took over the human's newer email).
fn is_unread(link: &LinkState) -> bool {
    let only_opt_out = |f: &Fields| f.keys().all(|k| *k == Field::EmailOptOut);
    only_opt_out(&link.known) && only_opt_out(&link.pushed)
}

/// Whether `remote` is the primary record of `system` for this person: its oldest open link.
/// The ledger orders links made by a fuzzy rule after the others: such a record holds another
/// address of the human, and the record with the person's own address (one leadsync created
/// while a hand-made one was being linked, say) is the one to write, since HubSpot refuses an
/// email that another contact holds.
/// A record not linked yet is primary when the system has no other.
fn is_primary(lead: &LeadState, system: &SystemName, remote: &RemoteId) -> bool {
    lead.links.iter().find(|k| &k.system == system).is_none_or(|k| &k.remote == remote)
}

/// The primary record of a system.
fn primary<'a>(lead: &'a LeadState, system: &SystemName) -> Option<&'a LinkState> {
    lead.links.iter().find(|k| &k.system == system)
}

/// Under `prefer S`: `Some(Some(value))` when S's primary record holds a value, `Some(None)`
/// when it holds none; `None` when the rule is not `prefer` or S has no record of the person.
fn preferred_value(lead: &LeadState, rule: &FieldRule, field: &Field) -> Option<Option<String>> {
    let FieldRule::Prefer { system, .. } = rule else { return None };
    primary(lead, system).map(|k| k.known.get(field).cloned())
}

struct FieldCtx<'a> {
    rule: &'a FieldRule,
    current: Option<&'a str>,
    incoming: &'a str,
    /// The last value the changed record and the person agreed on.
    base: Option<&'a str>,
    /// An existing person meets this record for the first time.
    first_sight: bool,
    from: &'a SystemName,
    from_primary: bool,
    /// Under `prefer S`: S's primary record's value (`Some(None)`: S holds none); `None`:
    /// not a prefer rule, or S has no record of this person.
    preferred_value: Option<Option<String>>,
    changed_at: DateTime<Utc>,
    current_at: Option<DateTime<Utc>>,
}

#[derive(Debug, PartialEq)]
enum Resolution {
    Keep,
    /// Take the incoming value; `conflict` when it overrode a change on the other side.
    Take {
        conflict: bool,
    },
    /// Keep the person's value over a conflicting change (audited).
    KeepConflict,
    /// Park the conflict in the review queue.
    Park,
}

/// The resolution of one field given the person's current value and news from a system.
fn resolve(c: &FieldCtx<'_>) -> Resolution {
    let take = Resolution::Take { conflict: false };
    match c.rule {
        FieldRule::DontSync => return Resolution::Keep,
        FieldRule::HighestStage => {
            let cur = c.current.and_then(Stage::parse);
            return match (cur, Stage::parse(c.incoming)) {
                (Some(cur), Some(n)) if n <= cur => Resolution::Keep,
                (_, Some(_)) => take,
                (_, None) => Resolution::Keep,
            };
        }
        FieldRule::AnyTrue => {
            return if c.current == Some("true") { Resolution::Keep } else { take };
        }
        _ => {}
    }
    if c.current == Some(c.incoming) {
        return Resolution::Keep;
    }
    let Some(current) = c.current else { return take };
    // Both changed since they last agreed: the person moved (another side's change) and the
    // record moved to something else.
    let conflict = c.base.is_some_and(|b| b != current);
    match c.rule {
        FieldRule::Prefer { system, unless_blank } => {
            if c.from == system {
                return if c.from_primary {
                    Resolution::Take { conflict }
                } else {
                    Resolution::Keep
                };
            }
            match &c.preferred_value {
                // The preferred system holds a value: it stands.
                Some(Some(_)) => {
                    if conflict {
                        Resolution::KeepConflict
                    } else {
                        Resolution::Keep
                    }
                }
                // It holds none: others fill in only under `unless blank`.
                Some(None) if !unless_blank => Resolution::Keep,
                _ if c.first_sight => Resolution::Keep,
                _ => Resolution::Take { conflict },
            }
        }
        _ if c.first_sight => Resolution::Keep,
        FieldRule::Review if conflict => Resolution::Park,
        FieldRule::MostRecent if conflict => {
            if c.current_at.is_none_or(|at| c.changed_at >= at) {
                Resolution::Take { conflict: true }
            } else {
                Resolution::KeepConflict
            }
        }
        // The record never agreed with the person on this field (it held none, or another
        // value, since it was linked): its value is not a change since an agreement, and one
        // older than the person's (a vendor merge filling a blank survivor) must not revert it.
        FieldRule::MostRecent
            if c.base.is_none() && c.current_at.is_some_and(|at| c.changed_at < at) =>
        {
            Resolution::Keep
        }
        _ => take,
    }
}

/// A lead status that implies a minimum stage lifts the stage. Returns the audit detail.
fn apply_status_floor(
    fields: &mut Fields,
    provenance: &mut BTreeMap<Field, Provenance>,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Option<serde_json::Value> {
    let floor = fields.get(&Field::LeadStatus).and_then(|s| rules.status_implies_stage.get(s))?;
    let current = fields.get(&Field::LifecycleStage).and_then(|s| Stage::parse(s));
    if current.is_none_or(|c| c < *floor) {
        fields.insert(Field::LifecycleStage, floor.as_str().to_string());
        provenance.insert(
            Field::LifecycleStage,
            Provenance {
                system: "leadsync".into(),
                value: Some(floor.as_str().to_string()),
                at: now,
                rule: "status_implies_stage".into(),
            },
        );
        return Some(serde_json::json!({
            "field": Field::LifecycleStage.as_str(),
            "from": current.map(Stage::as_str),
            "to": floor.as_str(),
            "rule": "status_implies_stage",
        }));
    }
    None
}

/// The fields of a change that are news: they differ from what leadsync knew the record held.
/// Values that predate one of leadsync's own pushes are not news.
fn news_in(change: &Change, link: Option<&LinkState>) -> Fields {
    let Some(link) = link else { return change.fields.clone() };
    let stale = link.pushed_at.is_some_and(|p| change.fetched_at < p);
    change
        .fields
        .iter()
        .filter(|(f, v)| !same_value(**f, link.known.get(f), v))
        .filter(|(f, _)| !(stale && link.pushed.contains_key(f)))
        .map(|(f, v)| (*f, v.clone()))
        .collect()
}

/// Whether this change must be confirmed by reading the record again: it is a state read
/// before one of leadsync's pushes to the record had ended (`fetched_at` is when the read
/// started, `pushed_at` when the push ended), and it shows a pushed field with another value.
/// Such a state is either from before the push landed (then the pushed value stands) or holds
/// an edit made after it landed (then it is news), and nothing in it tells which; [`news_in`]
/// treats it as the former, and a read that starts now, after the push ended, settles it.
pub fn reread_needed(ctx: &Context, system: &SystemName, change: &Change) -> bool {
    if !change.fate.is_live() {
        return false;
    }
    let Some(link) = ctx
        .linked
        .as_ref()
        .and_then(|l| l.links.iter().find(|k| &k.system == system && k.remote == change.remote))
    else {
        return false;
    };
    if link.pushed_at.is_none_or(|p| change.fetched_at >= p) {
        return false;
    }
    link.pushed.iter().any(|(f, pushed)| match change.fields.get(f) {
        Some(v) => !same_value(*f, Some(pushed), v),
        None => !pushed.is_empty(),
    })
}

/// The writes that bring the records of a person in line with the person, and the creates
/// the policies ask for. The primary record of each system gets every field it maps; other
/// records of the same system get opt-outs only (consent crosses to every record). Fields
/// with an open conflict and `don't sync` fields are not written.
pub fn plan_pushes(lead: &LeadState, rules: &Rules) -> Vec<PushIntent> {
    let person = &lead.fields;
    let mut out = Vec::new();
    for sys in &rules.systems {
        let mut linked = false;
        for link in lead.links.iter().filter(|k| k.system == sys.name) {
            let desired = sys.map_for(&link.remote.object_type).writable(person);
            let mut diff = diff_for_push(&desired, &link.known);
            diff.retain(|f, _| !lead.held.contains(f) && rules.rule(*f) != FieldRule::DontSync);
            // A record linked without being read (a merge survivor, a converted contact):
            // leadsync does not know what it holds, so a diff against nothing would write
            // every field blind, over whatever a human typed there meanwhile. The ledger asks
            // the fetch stage to read it (`Decision::link_other`) and its first read plans the
            // writes; only an opt-out, which nothing a human types there can undo, goes now.
            if linked || is_unread(link) {
                diff.retain(|f, _| *f == Field::EmailOptOut);
            }
            // Consent can be per address (HubSpot subscribes a contact's new email): a new
            // email goes out with the opt-out again, whatever leadsync knew the record held.
            // Only an email that is really written: one held for review, not synced, or
            // never written to a secondary record would send the opt-out again on every plan.
            if diff.contains_key(&Field::Email)
                && desired.get(&Field::EmailOptOut).map(String::as_str) == Some("true")
                && !lead.held.contains(&Field::EmailOptOut)
                && rules.rule(Field::EmailOptOut) != FieldRule::DontSync
            {
                diff.insert(Field::EmailOptOut, "true".to_string());
            }
            linked = true;
            if !diff.is_empty() {
                out.push(PushIntent {
                    system: sys.name.clone(),
                    remote: Some(link.remote.clone()),
                    object_type: link.remote.object_type.clone(),
                    fields: diff,
                });
            }
        }
        // A queued create is planned again (not skipped) so that its fields stay current; the
        // outbox keeps one pending create per person and system.
        if linked || !person.contains_key(&Field::Email) {
            continue;
        }
        if lead.tombstoned.contains(&sys.name) && !rules.recreate_deleted {
            continue;
        }
        // Possibly the same human as a person who has a record there: a create now could be
        // their second record. The create waits for the review (reject plans it again).
        if rules.review_holds_creates && lead.review_holds.contains(&sys.name) {
            continue;
        }
        let stage = person.get(&Field::LifecycleStage).and_then(|s| Stage::parse(s));
        let wanted = match sys.create {
            CreatePolicy::Never => false,
            CreatePolicy::Always => true,
            CreatePolicy::FromStage(min) => stage.is_some_and(|s| s >= min),
        };
        if wanted {
            let mut fields = sys.map.writable(person);
            fields.retain(|f, _| !lead.held.contains(f) && rules.rule(*f) != FieldRule::DontSync);
            // A new record starts subscribed unless the person opted out; leadsync never
            // writes "false" anywhere.
            if fields.get(&Field::EmailOptOut).map(String::as_str) == Some("false") {
                fields.remove(&Field::EmailOptOut);
            }
            out.push(PushIntent {
                system: sys.name.clone(),
                remote: None,
                object_type: sys.object_type.clone(),
                fields,
            });
        }
    }
    lifecycle::add_clears(lead, rules, &mut out);
    out
}

/// The fields to write to a record that holds `known` so that it shows `desired`.
/// Stages only move forward and opt-outs are only ever set, never cleared.
pub fn diff_for_push(desired: &Fields, known: &Fields) -> Fields {
    desired
        .iter()
        .filter(|(f, v)| !same_value(**f, known.get(f), v))
        .filter(|(f, v)| match f {
            Field::LifecycleStage => {
                let k = known.get(f).and_then(|s| Stage::parse(s));
                let d = Stage::parse(v);
                match (k, d) {
                    (Some(k), Some(d)) => d > k,
                    (None, Some(_)) => true,
                    _ => false,
                }
            }
            Field::EmailOptOut => v.as_str() == "true",
            _ => true,
        })
        .map(|(f, v)| (*f, v.clone()))
        .collect()
}

/// Whether a known value and a new one say the same thing. Emails compare normalised, since
/// vendors treat them case-insensitively.
pub fn same_value(field: Field, known: Option<&String>, value: &str) -> bool {
    match (field, known) {
        (_, None) => false,
        (Field::Email, Some(k)) => k.trim().eq_ignore_ascii_case(value.trim()),
        (_, Some(k)) => k == value,
    }
}
