//! Does every system agree with the ledger? Used by `leadsync demo` and the integration tests,
//! reading the vendors' records independently of the sync engine's own bookkeeping.

use std::collections::BTreeMap;

use crate::domain::{Field, RemoteId, Stage, SystemName};
use crate::ledger::LeadSnapshot;
use crate::reconcile::{CreatePolicy, FieldRule, Rules};

/// One way a system disagrees with the ledger. Carries ids and field names, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    pub lead_id: String,
    pub system: String,
    pub remote: Option<String>,
    pub field: Option<Field>,
    pub problem: &'static str,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lead {} at {}", self.lead_id, self.system)?;
        if let Some(r) = &self.remote {
            write!(f, " ({r})")?;
        }
        if let Some(field) = self.field {
            write!(f, " field {field}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// Reads a record's vendor properties (`None` when the vendor does not have it).
pub type Fetch<'a> = &'a dyn Fn(&SystemName, &RemoteId) -> Option<BTreeMap<String, Option<String>>>;

/// Compare every person with every record linked to them, as the engine means them to be:
/// the primary record of each system (its first open link in the ledger's order) holds every field its object's
/// mapping writes (`don't sync` fields aside), other records of that system the opt-out; a
/// person missing in a system where one of their records was deleted is fine unless
/// `identity.recreate_deleted`, and so is one whose create waits for a duplicate review. `fetch` returns a record's vendor properties (`None` when the
/// vendor does not have it).
pub fn compare(snapshot: &[LeadSnapshot], rules: &Rules, fetch: Fetch<'_>) -> Vec<Disagreement> {
    let mut out = Vec::new();
    for lead in snapshot {
        let stage = lead.fields.get(&Field::LifecycleStage).and_then(|s| Stage::parse(s));
        for sys in &rules.systems {
            let records: Vec<&RemoteId> =
                lead.links.iter().filter(|(s, _)| s == sys.name.as_str()).map(|(_, r)| r).collect();
            let tombstoned = lead.tombstoned.contains(sys.name.as_str()) && !rules.recreate_deleted;
            let held = rules.review_holds_creates && lead.review_held.contains(sys.name.as_str());
            let should_exist = lead.fields.contains_key(&Field::Email)
                && !tombstoned
                && !held
                && match sys.create {
                    CreatePolicy::Always => true,
                    CreatePolicy::Never => false,
                    CreatePolicy::FromStage(min) => stage.is_some_and(|s| s >= min),
                };
            if records.is_empty() && should_exist {
                out.push(Disagreement {
                    lead_id: lead.id.clone(),
                    system: sys.name.to_string(),
                    remote: None,
                    field: None,
                    problem: "person missing in this system",
                });
            }
            for (i, remote) in records.into_iter().enumerate() {
                // Each object type has its own mapping (a Contact has no Company); the primary
                // record (the oldest link) gets every field, the others opt-outs only.
                let map = sys.map_for(&remote.object_type);
                let mut desired = map.writable(&lead.fields);
                desired.retain(|f, _| rules.rule(*f) != FieldRule::DontSync);
                if i > 0 {
                    desired.retain(|f, _| *f == Field::EmailOptOut);
                }
                let Some(props) = fetch(&sys.name, remote) else {
                    out.push(Disagreement {
                        lead_id: lead.id.clone(),
                        system: sys.name.to_string(),
                        remote: Some(remote.to_string()),
                        field: None,
                        problem: "linked record missing at the vendor",
                    });
                    continue;
                };
                let actual = map.to_canonical(&props);
                for (field, want) in &desired {
                    let have = actual.get(field);
                    let agrees = match field {
                        Field::Email => {
                            have.is_some_and(|h| h.trim().eq_ignore_ascii_case(want.trim()))
                        }
                        Field::EmailOptOut => {
                            have.map(String::as_str).unwrap_or("false") == want.as_str()
                        }
                        _ => have == Some(want),
                    };
                    if !agrees {
                        out.push(Disagreement {
                            lead_id: lead.id.clone(),
                            system: sys.name.to_string(),
                            remote: Some(remote.to_string()),
                            field: Some(*field),
                            problem: "value differs from the ledger",
                        });
                    }
                }
            }
        }
    }
    out
}
