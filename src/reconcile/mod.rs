//! The reconciler: a pure function from (ledger state, change, rules, now) to a decision.
//!
//! **Architecture Invariant:** this module does no IO. The ledger loads a [`Context`], calls
//! [`reconcile`], and applies the [`Decision`] in the same transaction.
//!
//! Rules in this version:
//! - Matching: the record's existing link, else the ledger id leadsync stamped on it, else the
//!   normalised email. Otherwise a new person.
//! - Only what changed at the vendor since leadsync last knew the record counts as news.
//!   A field that went blank at the vendor does not blank the person.
//! - Field resolution: lifecycle stage takes the highest stage; email opt-out is true once any
//!   system says true; every other field takes the newest change. A record seen for the first
//!   time and linked to an existing person only fills the person's blanks.
//! - A lead status can imply a minimum stage (`working` ⇒ `sql`), from config.
//! - Pushes are diffs against what leadsync knows each record holds, so an unchanged person
//!   produces no writes (no echo); stages are never pushed backwards and opt-outs never undone.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::connectors::FieldMap;
use crate::domain::{Change, Field, Fields, RemoteId, Role, Stage, SystemName};

/// When a person who exists elsewhere should be created in a system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreatePolicy {
    Never,
    Always,
    /// Once the person reaches this stage or a later one.
    FromStage(Stage),
}

/// What the reconciler needs to know about one configured system.
#[derive(Debug, Clone)]
pub struct SystemRules {
    pub name: SystemName,
    pub role: Role,
    pub object_type: String,
    pub create: CreatePolicy,
    pub map: FieldMap,
}

#[derive(Debug, Clone)]
pub struct Rules {
    pub systems: Vec<SystemRules>,
    /// A lead status that implies at least this stage.
    pub status_implies_stage: BTreeMap<String, Stage>,
}

impl Rules {
    /// The default rules for the common pair: system `crm` on Salesforce Lead (created from
    /// MQL on) and system `marketing` on HubSpot contacts (everyone), with the default field
    /// maps and "working ⇒ SQL", "converted ⇒ opportunity". Used by tests and benchmarks.
    ///
    /// # Panics
    /// Never: the default field maps are valid (unit-tested in `field_map`).
    pub fn salesforce_hubspot_defaults() -> Rules {
        let map = |raw| FieldMap::from_raw(&raw, "defaults").expect("default field maps are valid");
        Rules {
            systems: vec![
                SystemRules {
                    name: SystemName("crm".into()),
                    role: Role::Crm,
                    object_type: "Lead".into(),
                    create: CreatePolicy::FromStage(Stage::Mql),
                    map: map(FieldMap::salesforce_lead_default()),
                },
                SystemRules {
                    name: SystemName("marketing".into()),
                    role: Role::Marketing,
                    object_type: "contact".into(),
                    create: CreatePolicy::Always,
                    map: map(FieldMap::hubspot_contact_default()),
                },
            ],
            status_implies_stage: [
                ("working".to_string(), Stage::Sql),
                ("converted".to_string(), Stage::Opportunity),
            ]
            .into(),
        }
    }

    pub fn system(&self, name: &SystemName) -> Option<&SystemRules> {
        self.systems.iter().find(|s| &s.name == name)
    }
}

/// Where a resolved value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub system: String,
    pub at: DateTime<Utc>,
    pub rule: String,
}

/// One person as the ledger holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadState {
    pub id: String,
    pub fields: Fields,
    pub provenance: BTreeMap<Field, Provenance>,
    pub links: Vec<LinkState>,
}

/// One linked remote record and what leadsync knows it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkState {
    pub system: SystemName,
    pub remote: RemoteId,
    pub known: Fields,
    /// Fields leadsync last pushed to it, and when that push started (leadsync's clock).
    pub pushed: Fields,
    pub pushed_at: Option<DateTime<Utc>>,
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
}

/// How a record came to be linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkReason {
    Existing,
    NewPerson,
    MatchedLedgerKey,
    MatchedEmail,
}

impl LinkReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkReason::Existing => "existing",
            LinkReason::NewPerson => "new_person",
            LinkReason::MatchedLedgerKey => "matched_ledger_key",
            LinkReason::MatchedEmail => "matched_email",
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

/// What to write, all in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub lead_id: String,
    pub is_new_lead: bool,
    pub lead_fields: Fields,
    pub provenance: BTreeMap<Field, Provenance>,
    /// Whether the person's fields changed at all.
    pub lead_changed: bool,
    /// A link to create for the changed record (`None` when it was linked already).
    pub new_link: Option<LinkReason>,
    /// What leadsync now knows the changed record holds.
    pub record_known: Fields,
    pub pushes: Vec<PushIntent>,
    pub audit: Vec<AuditEntry>,
}

/// Decide what one observed change means. `new_lead_id` is used only when the change is a new
/// person (ids are minted outside so that this stays pure and deterministic).
pub fn reconcile(
    ctx: &Context,
    system: &SystemName,
    change: &Change,
    rules: &Rules,
    new_lead_id: &str,
    now: DateTime<Utc>,
) -> Decision {
    let mut audit = Vec::new();
    let (lead, reason) = match (&ctx.linked, &ctx.by_key, &ctx.by_email) {
        (Some(l), _, _) => (Some(l), LinkReason::Existing),
        (None, Some(l), _) => (Some(l), LinkReason::MatchedLedgerKey),
        (None, None, Some(l)) => (Some(l), LinkReason::MatchedEmail),
        (None, None, None) => (None, LinkReason::NewPerson),
    };

    let this_link = lead
        .and_then(|l| l.links.iter().find(|k| &k.system == system && k.remote == change.remote));
    let incoming = news_in(change, this_link);

    let mut fields = lead.map(|l| l.fields.clone()).unwrap_or_default();
    let mut provenance = lead.map(|l| l.provenance.clone()).unwrap_or_default();
    let first_sight = this_link.is_none();
    let existing_person = lead.is_some();
    for (field, value) in &incoming {
        let current = fields.get(field);
        let (next, rule) = resolve(*field, current, value, first_sight && existing_person);
        if let Some(next) = next
            && current != Some(&next)
        {
            provenance.insert(
                *field,
                Provenance {
                    system: system.to_string(),
                    at: change.modified_at,
                    rule: rule.into(),
                },
            );
            fields.insert(*field, next);
        }
    }
    apply_status_floor(&mut fields, &mut provenance, rules, now);

    let lead_changed = lead.map(|l| l.fields != fields).unwrap_or(true);
    let lead_id = lead.map(|l| l.id.clone()).unwrap_or_else(|| new_lead_id.to_string());
    if reason != LinkReason::Existing {
        audit.push(AuditEntry {
            kind: "link",
            detail: serde_json::json!({
                "system": system.as_str(),
                "remote": change.remote.to_string(),
                "reason": reason.as_str(),
            }),
        });
    }
    if lead_changed && lead.is_some() {
        let changed: Vec<&str> = Field::ALL
            .iter()
            .filter(|f| lead.and_then(|l| l.fields.get(f)) != fields.get(f))
            .map(|f| f.as_str())
            .collect();
        audit.push(AuditEntry {
            kind: "fields",
            detail: serde_json::json!({ "system": system.as_str(), "fields": changed }),
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

    // Every record of this person, with what we know of it after this change.
    let mut links: Vec<LinkState> = lead.map(|l| l.links.clone()).unwrap_or_default();
    match links.iter_mut().find(|k| &k.system == system && k.remote == change.remote) {
        Some(k) => k.known = record_known.clone(),
        None => links.push(LinkState {
            system: system.clone(),
            remote: change.remote.clone(),
            known: record_known.clone(),
            pushed: Fields::new(),
            pushed_at: None,
        }),
    }
    let pushes = plan_pushes(&fields, &links, rules);

    Decision {
        lead_id,
        is_new_lead: lead.is_none(),
        lead_fields: fields,
        provenance,
        lead_changed,
        new_link: (reason != LinkReason::Existing).then_some(reason),
        record_known,
        pushes,
        audit,
    }
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

/// The resolved value of one field given the person's current value and news from a system.
/// `fill_only` is set when an existing person meets a record for the first time.
fn resolve(
    field: Field,
    current: Option<&String>,
    incoming: &str,
    fill_only: bool,
) -> (Option<String>, &'static str) {
    match field {
        Field::LifecycleStage => {
            let cur = current.and_then(|c| Stage::parse(c));
            match (cur, Stage::parse(incoming)) {
                (Some(c), Some(n)) if n <= c => (None, "highest_stage"),
                (_, Some(n)) => (Some(n.as_str().to_string()), "highest_stage"),
                (_, None) => (None, "highest_stage"),
            }
        }
        Field::EmailOptOut => {
            if current.map(String::as_str) == Some("true") {
                (None, "any_opt_out")
            } else {
                (Some(incoming.to_string()), "any_opt_out")
            }
        }
        _ if fill_only && current.is_some() => (None, "fill_blank"),
        _ => (Some(incoming.to_string()), "newest_change"),
    }
}

fn apply_status_floor(
    fields: &mut Fields,
    provenance: &mut BTreeMap<Field, Provenance>,
    rules: &Rules,
    now: DateTime<Utc>,
) {
    let Some(floor) =
        fields.get(&Field::LeadStatus).and_then(|s| rules.status_implies_stage.get(s))
    else {
        return;
    };
    let current = fields.get(&Field::LifecycleStage).and_then(|s| Stage::parse(s));
    if current.is_none_or(|c| c < *floor) {
        fields.insert(Field::LifecycleStage, floor.as_str().to_string());
        provenance.insert(
            Field::LifecycleStage,
            Provenance { system: "leadsync".into(), at: now, rule: "status_implies_stage".into() },
        );
    }
}

/// The writes that bring every record of a person in line with the person, and the creates
/// the policies ask for.
pub fn plan_pushes(person: &Fields, links: &[LinkState], rules: &Rules) -> Vec<PushIntent> {
    let mut out = Vec::new();
    for sys in &rules.systems {
        let desired = sys.map.writable(person);
        let mut linked = false;
        for link in links.iter().filter(|k| k.system == sys.name) {
            linked = true;
            let diff = diff_for_push(&desired, &link.known);
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
        let stage = person.get(&Field::LifecycleStage).and_then(|s| Stage::parse(s));
        let wanted = match sys.create {
            CreatePolicy::Never => false,
            CreatePolicy::Always => true,
            CreatePolicy::FromStage(min) => stage.is_some_and(|s| s >= min),
        };
        if wanted {
            let mut fields = desired.clone();
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
fn same_value(field: Field, known: Option<&String>, value: &str) -> bool {
    match (field, known) {
        (_, None) => false,
        (Field::Email, Some(k)) => k.trim().eq_ignore_ascii_case(value.trim()),
        (_, Some(k)) => k == value,
    }
}
