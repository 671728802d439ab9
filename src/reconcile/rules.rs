//! The rules the reconciler applies: which systems exist and how each is written to, and how
//! each canonical field is resolved when systems disagree.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::connectors::FieldMap;
use crate::contract::config::Contract;
use crate::domain::{Field, Role, Stage, SystemName};
use crate::identity::matcher::Matcher;

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
    /// The object type leadsync creates records as.
    pub object_type: String,
    pub create: CreatePolicy,
    /// The field map of `object_type`.
    pub map: FieldMap,
    /// Field maps of the system's other object types (a Salesforce Contact has no Company).
    pub other_maps: BTreeMap<String, FieldMap>,
    /// The vendor refuses one email on two of its records (HubSpot contacts): an email edited
    /// on a person's second record there stays that record's own.
    pub unique_email: bool,
}

impl SystemRules {
    /// The field map of one of the system's object types.
    pub fn map_for(&self, object_type: &str) -> &FieldMap {
        self.other_maps.get(object_type).unwrap_or(&self.map)
    }
}

/// How one canonical field is resolved. Written in config as `"most recent"`,
/// `"prefer crm"`, `"prefer crm unless blank"`, `"don't sync"`, `"review"`,
/// `"highest stage"` (lifecycle stage only) and `"any true"` (email opt-out only).
///
/// A change on one side only is never a conflict: it is taken (except under `prefer`, where
/// the preferred system's value stands while it has one). A conflict is a field that changed on
/// both sides since they last agreed; the rule settles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRule {
    /// The newer change wins a conflict.
    MostRecent,
    /// The named system's value wins; with `unless_blank`, others fill in while it has none.
    Prefer { system: SystemName, unless_blank: bool },
    /// Never taken from any system, never pushed.
    DontSync,
    /// A conflict is parked in the review queue; the field is not pushed until it is decided.
    Review,
    /// The furthest stage down the funnel wins (lifecycle stage).
    HighestStage,
    /// Once any system says true, it stays true (email opt-out).
    AnyTrue,
}

impl FieldRule {
    /// Parse the config form. Separators may be spaces, `_` or `-`; case is ignored.
    pub fn parse(raw: &str) -> Option<FieldRule> {
        let norm = raw.trim().to_ascii_lowercase().replace(['_', '-'], " ").replace('\'', "");
        let words: Vec<&str> = norm.split_whitespace().collect();
        match words.as_slice() {
            ["most", "recent"] => Some(FieldRule::MostRecent),
            ["dont", "sync"] | ["do", "not", "sync"] => Some(FieldRule::DontSync),
            ["review"] => Some(FieldRule::Review),
            ["highest", "stage"] | ["highest", "stage", "wins"] => Some(FieldRule::HighestStage),
            ["any", "true"] | ["any", "true", "wins"] => Some(FieldRule::AnyTrue),
            ["prefer", system] => Some(FieldRule::Prefer {
                system: SystemName((*system).to_string()),
                unless_blank: false,
            }),
            ["prefer", system, "unless", "blank"] => Some(FieldRule::Prefer {
                system: SystemName((*system).to_string()),
                unless_blank: true,
            }),
            _ => None,
        }
    }

    /// The default rule of a field: the lattices for stage and opt-out, most recent otherwise.
    pub fn default_for(field: Field) -> FieldRule {
        match field {
            Field::LifecycleStage => FieldRule::HighestStage,
            Field::EmailOptOut => FieldRule::AnyTrue,
            _ => FieldRule::MostRecent,
        }
    }

    /// Why a rule cannot govern a field, if it cannot. Stages only move forward and consent
    /// only tightens through sync (design invariants 6 and 7), and creates need an email.
    pub fn unfit_for(&self, field: Field) -> Option<&'static str> {
        match (field, self) {
            (Field::LifecycleStage, FieldRule::HighestStage | FieldRule::DontSync) => None,
            (Field::LifecycleStage, _) => Some("lifecycle_stage only takes \"highest stage\""),
            (Field::EmailOptOut, FieldRule::AnyTrue) => None,
            (Field::EmailOptOut, _) => Some("email_opt_out only takes \"any true\""),
            (Field::Email, FieldRule::DontSync) => Some("email identifies people; it must sync"),
            (_, FieldRule::HighestStage) => Some("\"highest stage\" is for lifecycle_stage"),
            (_, FieldRule::AnyTrue) => Some("\"any true\" is for email_opt_out"),
            _ => None,
        }
    }
}

impl fmt::Display for FieldRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldRule::MostRecent => f.write_str("most_recent"),
            FieldRule::Prefer { system, unless_blank: false } => write!(f, "prefer_{system}"),
            FieldRule::Prefer { system, unless_blank: true } => {
                write!(f, "prefer_{system}_unless_blank")
            }
            FieldRule::DontSync => f.write_str("dont_sync"),
            FieldRule::Review => f.write_str("review"),
            FieldRule::HighestStage => f.write_str("highest_stage"),
            FieldRule::AnyTrue => f.write_str("any_true"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rules {
    pub systems: Vec<SystemRules>,
    /// A lead status that implies at least this stage.
    pub status_implies_stage: BTreeMap<String, Stage>,
    /// Field rules that differ from [`FieldRule::default_for`].
    pub field_rules: BTreeMap<Field, FieldRule>,
    /// Create a person again in a system where their record was deleted.
    pub recreate_deleted: bool,
    /// Hold a person's create in a system while an open duplicate review pairs them with a
    /// person who has a record there (`identity.review_holds_creates`, default off: link
    /// and report, like merging at the vendor).
    pub review_holds_creates: bool,
    /// The fuzzy matching engine (exact keys are matched before it is asked).
    pub matcher: Matcher,
    /// The lead contract (`[contract]`): when set, the governed lifecycle decides the stage
    /// (see `reconcile::lifecycle`); `None`: stages follow the "highest stage" lattice alone.
    pub contract: Option<Arc<Contract>>,
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
                    other_maps: BTreeMap::new(),
                    unique_email: false,
                },
                SystemRules {
                    name: SystemName("marketing".into()),
                    role: Role::Marketing,
                    object_type: "contact".into(),
                    create: CreatePolicy::Always,
                    map: map(FieldMap::hubspot_contact_default()),
                    other_maps: BTreeMap::new(),
                    unique_email: true,
                },
            ],
            status_implies_stage: [
                ("working".to_string(), Stage::Sql),
                ("converted".to_string(), Stage::Opportunity),
            ]
            .into(),
            field_rules: BTreeMap::new(),
            recreate_deleted: false,
            review_holds_creates: false,
            matcher: Matcher::default(),
            contract: None,
        }
    }

    pub fn system(&self, name: &SystemName) -> Option<&SystemRules> {
        self.systems.iter().find(|s| &s.name == name)
    }

    /// The rule that resolves `field`.
    pub fn rule(&self, field: Field) -> FieldRule {
        self.field_rules.get(&field).cloned().unwrap_or_else(|| FieldRule::default_for(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_in_their_written_forms() {
        assert_eq!(FieldRule::parse("most recent"), Some(FieldRule::MostRecent));
        assert_eq!(FieldRule::parse("Don't sync"), Some(FieldRule::DontSync));
        assert_eq!(FieldRule::parse("dont_sync"), Some(FieldRule::DontSync));
        assert_eq!(
            FieldRule::parse("prefer crm unless blank"),
            Some(FieldRule::Prefer { system: SystemName("crm".into()), unless_blank: true })
        );
        assert_eq!(
            FieldRule::parse("prefer marketing"),
            Some(FieldRule::Prefer { system: SystemName("marketing".into()), unless_blank: false })
        );
        assert_eq!(FieldRule::parse("highest stage wins"), Some(FieldRule::HighestStage));
        assert_eq!(FieldRule::parse("any-true"), Some(FieldRule::AnyTrue));
        assert_eq!(FieldRule::parse("newest"), None);
        assert_eq!(FieldRule::parse("prefer"), None);
    }

    #[test]
    fn lattice_fields_refuse_other_rules() {
        assert!(FieldRule::MostRecent.unfit_for(Field::LifecycleStage).is_some());
        assert!(FieldRule::Review.unfit_for(Field::EmailOptOut).is_some());
        assert!(FieldRule::AnyTrue.unfit_for(Field::Title).is_some());
        assert!(FieldRule::DontSync.unfit_for(Field::Email).is_some());
        assert!(FieldRule::Review.unfit_for(Field::Company).is_none());
    }
}
