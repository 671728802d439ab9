//! Folding two persons into one: when a reviewer accepts a duplicate, or a vendor merge or a
//! conversion shows that two persons are one human.

use chrono::{DateTime, Utc};

use super::{FieldRule, LeadState, Provenance, Rules};
use crate::domain::{Field, Stage};

/// The person `winner` becomes after absorbing `loser`: the union of their links (the
/// winner's first, so its primaries stay primary), and per field the winner's value unless it
/// has none, except the lattices (highest stage, any opt-out) which join both, and `prefer`
/// rules, which take the preferred system's primary record's value when one holds it.
pub fn merge_persons(
    winner: &LeadState,
    loser: &LeadState,
    rules: &Rules,
    now: DateTime<Utc>,
) -> LeadState {
    let mut out = winner.clone();
    for link in &loser.links {
        if !out.links.iter().any(|k| k.system == link.system && k.remote == link.remote) {
            super::add_link(&mut out.links, link.clone());
        }
    }
    out.held.extend(loser.held.iter().copied());
    out.tombstoned.extend(loser.tombstoned.iter().cloned());
    for field in Field::ALL {
        let w = winner.fields.get(&field);
        let l = loser.fields.get(&field);
        let rule = rules.rule(field);
        let took_loser = match (&rule, w, l) {
            (_, _, None) => false,
            (FieldRule::HighestStage, Some(w), Some(l)) => {
                Stage::parse(l).zip(Stage::parse(w)).is_some_and(|(l, w)| l > w)
            }
            (FieldRule::AnyTrue, Some(w), Some(l)) => w != "true" && l == "true",
            (FieldRule::Prefer { system, .. }, _, Some(_)) => {
                let from_preferred = |p: &LeadState| {
                    p.links
                        .iter()
                        .find(|k| &k.system == system)
                        .and_then(|k| k.known.get(&field))
                        .is_some()
                };
                !from_preferred(winner) && from_preferred(loser) || w.is_none()
            }
            (_, None, Some(_)) => true,
            _ => false,
        };
        if took_loser && let Some(v) = l {
            out.fields.insert(field, v.clone());
            let prov = loser.provenance.get(&field).cloned().unwrap_or(Provenance {
                system: "leadsync".into(),
                value: Some(v.clone()),
                at: now,
                rule: "merge".into(),
            });
            out.provenance.insert(field, prov);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RemoteId, SystemName};
    use crate::reconcile::LinkState;

    fn lead(id: &str, f: &[(Field, &str)], sys: &str, remote: &str) -> LeadState {
        LeadState {
            id: id.into(),
            fields: f.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
            links: vec![LinkState::new(
                SystemName(sys.into()),
                RemoteId { object_type: "contact".into(), id: remote.into() },
            )],
            ..LeadState::default()
        }
    }

    #[test]
    fn winner_keeps_its_values_and_fills_blanks_and_lattices_join() {
        let r = Rules::salesforce_hubspot_defaults();
        let w = lead(
            "A",
            &[(Field::FirstName, "Ann"), (Field::LifecycleStage, "lead")],
            "marketing",
            "1",
        );
        let l = lead(
            "B",
            &[
                (Field::FirstName, "Anne"),
                (Field::Title, "CTO"),
                (Field::LifecycleStage, "sql"),
                (Field::EmailOptOut, "true"),
            ],
            "marketing",
            "2",
        );
        let m = merge_persons(&w, &l, &r, Utc::now());
        assert_eq!(m.id, "A");
        assert_eq!(m.fields[&Field::FirstName], "Ann");
        assert_eq!(m.fields[&Field::Title], "CTO");
        assert_eq!(m.fields[&Field::LifecycleStage], "sql");
        assert_eq!(m.fields[&Field::EmailOptOut], "true");
        assert_eq!(m.links.len(), 2);
        assert_eq!(m.links[0].remote.id, "1", "the winner's record stays primary");
    }
}
