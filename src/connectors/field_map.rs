//! Field and value mappings between canonical fields and one system's properties.
//!
//! Lives in config per system (`[systems.NAME.mapping]`), with defaults for Salesforce Lead and
//! HubSpot contacts. Values of `lifecycle_stage` and `lead_status` are translated through value
//! maps: one vendor value per canonical value for writing, plus aliases for reading.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::KeyError;
use crate::domain::{Field, Fields, Stage};

/// The mapping as written in config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapRaw {
    /// canonical field name -> vendor property name
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// canonical stage -> vendor value written for it
    #[serde(default)]
    pub stage_values: BTreeMap<String, String>,
    /// extra vendor stage values and the canonical stage they read as
    #[serde(default)]
    pub stage_aliases: BTreeMap<String, String>,
    /// canonical lead status -> vendor value written for it
    #[serde(default)]
    pub lead_status_values: BTreeMap<String, String>,
    /// extra vendor status values and the canonical status they read as
    #[serde(default)]
    pub lead_status_aliases: BTreeMap<String, String>,
}

/// A validated mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMap {
    fields: BTreeMap<Field, String>,
    stage_write: BTreeMap<Stage, String>,
    stage_read: BTreeMap<String, Stage>,
    status_write: BTreeMap<String, String>,
    status_read: BTreeMap<String, String>,
}

impl FieldMap {
    /// Validate a raw mapping; `prefix` is the config path used in error messages.
    ///
    /// # Errors
    /// Names the first key that is not a canonical field or stage, or a field mapped twice.
    pub fn from_raw(raw: &FieldMapRaw, prefix: &str) -> Result<FieldMap, KeyError> {
        let err = |key: String, problem: String| KeyError { key, problem };
        let mut fields = BTreeMap::new();
        let mut seen_props = BTreeMap::new();
        for (name, prop) in &raw.fields {
            let field = Field::parse(name).ok_or_else(|| {
                err(
                    format!("{prefix}.fields.{name}"),
                    format!(
                        "unknown canonical field (expected one of: {})",
                        Field::ALL.map(Field::as_str).join(", ")
                    ),
                )
            })?;
            if prop.trim().is_empty() {
                return Err(err(
                    format!("{prefix}.fields.{name}"),
                    "property name is empty".into(),
                ));
            }
            if let Some(other) = seen_props.insert(prop.clone(), name.clone()) {
                // Two canonical fields on one property is allowed only for status/stage
                // sharing Salesforce's Status, which we do not support yet: refuse clearly.
                return Err(err(
                    format!("{prefix}.fields.{name}"),
                    format!("property {prop:?} is already mapped to {other}"),
                ));
            }
            fields.insert(field, prop.clone());
        }
        let parse_stage = |key: String, s: &str| {
            Stage::parse(s).ok_or_else(|| {
                err(
                    key,
                    format!(
                        "unknown stage {s:?} (expected one of: {})",
                        Stage::ALL.map(Stage::as_str).join(", ")
                    ),
                )
            })
        };
        let mut stage_write = BTreeMap::new();
        let mut stage_read = BTreeMap::new();
        for (stage, value) in &raw.stage_values {
            let st = parse_stage(format!("{prefix}.stage_values.{stage}"), stage)?;
            stage_write.insert(st, value.clone());
            stage_read.insert(value.clone(), st);
        }
        for (value, stage) in &raw.stage_aliases {
            let st = parse_stage(format!("{prefix}.stage_aliases.{value}"), stage)?;
            stage_read.insert(value.clone(), st);
        }
        let mut status_write = BTreeMap::new();
        let mut status_read = BTreeMap::new();
        for (status, value) in &raw.lead_status_values {
            status_write.insert(status.clone(), value.clone());
            status_read.insert(value.clone(), status.clone());
        }
        for (value, status) in &raw.lead_status_aliases {
            if !status_write.contains_key(status) {
                return Err(err(
                    format!("{prefix}.lead_status_aliases.{value}"),
                    format!("status {status:?} is not a key of lead_status_values"),
                ));
            }
            status_read.insert(value.clone(), status.clone());
        }
        if fields.contains_key(&Field::LifecycleStage) && stage_write.is_empty() {
            return Err(err(
                format!("{prefix}.stage_values"),
                "lifecycle_stage is mapped but no stage values are given".into(),
            ));
        }
        if fields.contains_key(&Field::LeadStatus) && status_write.is_empty() {
            return Err(err(
                format!("{prefix}.lead_status_values"),
                "lead_status is mapped but no status values are given".into(),
            ));
        }
        Ok(FieldMap { fields, stage_write, stage_read, status_write, status_read })
    }

    /// The vendor property a canonical field maps to.
    pub fn property(&self, field: Field) -> Option<&str> {
        self.fields.get(&field).map(String::as_str)
    }

    /// Every mapped vendor property, for `SELECT` lists and `properties=` parameters.
    pub fn properties(&self) -> impl Iterator<Item = &str> {
        self.fields.values().map(String::as_str)
    }

    pub fn maps(&self, field: Field) -> bool {
        self.fields.contains_key(&field)
    }

    /// Whether a canonical lead status can be written to this system.
    pub fn knows_status(&self, status: &str) -> bool {
        self.status_write.contains_key(status)
    }

    /// Vendor properties (as strings; `None` for null) to canonical fields. Values that the
    /// value maps do not know are left out rather than guessed.
    pub fn to_canonical(&self, props: &BTreeMap<String, Option<String>>) -> Fields {
        let mut out = Fields::new();
        for (field, prop) in &self.fields {
            let Some(Some(raw)) = props.get(prop) else { continue };
            let value = match field {
                Field::LifecycleStage => match self.stage_read.get(raw) {
                    Some(st) => st.as_str().to_string(),
                    None => continue,
                },
                Field::LeadStatus => match self.status_read.get(raw) {
                    Some(s) => s.clone(),
                    None => continue,
                },
                Field::EmailOptOut => match raw.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" => "true".to_string(),
                    "false" | "0" | "" => "false".to_string(),
                    _ => continue,
                },
                _ => {
                    if raw.is_empty() {
                        continue;
                    }
                    raw.clone()
                }
            };
            out.insert(*field, value);
        }
        out
    }

    /// Canonical fields to (vendor property, vendor value) pairs. Unmapped fields and values
    /// the value maps cannot express are left out.
    pub fn to_remote(&self, fields: &Fields) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (field, value) in fields {
            let Some(prop) = self.fields.get(field) else { continue };
            let v = match field {
                Field::LifecycleStage => {
                    match Stage::parse(value).and_then(|st| self.stage_write.get(&st)) {
                        Some(v) => v.clone(),
                        None => continue,
                    }
                }
                Field::LeadStatus => match self.status_write.get(value) {
                    Some(v) => v.clone(),
                    None => continue,
                },
                _ => value.clone(),
            };
            out.push((prop.clone(), v));
        }
        out
    }

    /// Keep only what this mapping can write: mapped fields with expressible values.
    pub fn writable(&self, fields: &Fields) -> Fields {
        fields
            .iter()
            .filter(|(f, v)| match f {
                Field::LifecycleStage => {
                    Stage::parse(v).is_some_and(|st| self.stage_write.contains_key(&st))
                }
                Field::LeadStatus => self.status_write.contains_key(*v),
                _ => self.fields.contains_key(f),
            })
            .map(|(f, v)| (*f, v.clone()))
            .collect()
    }

    /// Default mapping for the Salesforce Lead object.
    pub fn salesforce_lead_default() -> FieldMapRaw {
        let fields = [
            ("email", "Email"),
            ("first_name", "FirstName"),
            ("last_name", "LastName"),
            ("company", "Company"),
            ("title", "Title"),
            ("phone", "Phone"),
            ("lead_source", "LeadSource"),
            ("lead_status", "Status"),
            ("email_opt_out", "HasOptedOutOfEmail"),
        ];
        let statuses = [
            ("new", "Open - Not Contacted"),
            ("working", "Working - Contacted"),
            ("converted", "Closed - Converted"),
            ("unqualified", "Closed - Not Converted"),
        ];
        FieldMapRaw {
            fields: pairs(&fields),
            lead_status_values: pairs(&statuses),
            ..FieldMapRaw::default()
        }
    }

    /// Default mapping for the Salesforce Contact object. A Contact has no `Company` (the
    /// company is its Account's `Name`) and no `Status`, so neither is mapped.
    pub fn salesforce_contact_default() -> FieldMapRaw {
        let fields = [
            ("email", "Email"),
            ("first_name", "FirstName"),
            ("last_name", "LastName"),
            ("title", "Title"),
            ("phone", "Phone"),
            ("lead_source", "LeadSource"),
            ("email_opt_out", "HasOptedOutOfEmail"),
        ];
        FieldMapRaw { fields: pairs(&fields), ..FieldMapRaw::default() }
    }

    /// Default mapping for HubSpot contacts.
    pub fn hubspot_contact_default() -> FieldMapRaw {
        let fields = [
            ("email", "email"),
            ("first_name", "firstname"),
            ("last_name", "lastname"),
            ("company", "company"),
            ("title", "jobtitle"),
            ("phone", "phone"),
            ("lead_source", "leadsource"),
            ("lifecycle_stage", "lifecyclestage"),
            ("lead_status", "hs_lead_status"),
            ("email_opt_out", "hs_email_optout"),
        ];
        let stages = [
            ("subscriber", "subscriber"),
            ("lead", "lead"),
            ("mql", "marketingqualifiedlead"),
            ("sql", "salesqualifiedlead"),
            ("opportunity", "opportunity"),
            ("customer", "customer"),
        ];
        let statuses = [
            ("new", "NEW"),
            ("open", "OPEN"),
            ("working", "IN_PROGRESS"),
            ("converted", "OPEN_DEAL"),
            ("unqualified", "UNQUALIFIED"),
            ("nurture", "BAD_TIMING"),
        ];
        let status_aliases = [("ATTEMPTED_TO_CONTACT", "working"), ("CONNECTED", "working")];
        FieldMapRaw {
            fields: pairs(&fields),
            stage_values: pairs(&stages),
            stage_aliases: BTreeMap::new(),
            lead_status_values: pairs(&statuses),
            lead_status_aliases: pairs(&status_aliases),
        }
    }
}

fn pairs(p: &[(&str, &str)]) -> BTreeMap<String, String> {
    p.iter().map(|(a, b)| ((*a).to_string(), (*b).to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs() -> FieldMap {
        FieldMap::from_raw(&FieldMap::hubspot_contact_default(), "systems.m.mapping")
            .expect("default is valid")
    }

    #[test]
    fn defaults_are_valid() {
        FieldMap::from_raw(&FieldMap::salesforce_lead_default(), "x").expect("sf default");
        let contact = FieldMap::from_raw(&FieldMap::salesforce_contact_default(), "x")
            .expect("sf contact default");
        assert!(!contact.maps(Field::Company) && !contact.maps(Field::LeadStatus));
        assert_eq!(contact.property(Field::EmailOptOut), Some("HasOptedOutOfEmail"));
        hs();
    }

    #[test]
    fn round_trips_stage_and_status() {
        let m = hs();
        let props: BTreeMap<String, Option<String>> = [
            ("lifecyclestage", Some("marketingqualifiedlead")),
            ("hs_lead_status", Some("CONNECTED")),
            ("hs_email_optout", Some("true")),
            ("firstname", None),
            ("company", Some("")),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect();
        let f = m.to_canonical(&props);
        assert_eq!(f.get(&Field::LifecycleStage).map(String::as_str), Some("mql"));
        assert_eq!(f.get(&Field::LeadStatus).map(String::as_str), Some("working"));
        assert_eq!(f.get(&Field::EmailOptOut).map(String::as_str), Some("true"));
        assert!(!f.contains_key(&Field::FirstName));
        assert!(!f.contains_key(&Field::Company));
        let back = m.to_remote(&f);
        assert!(back.contains(&("lifecyclestage".into(), "marketingqualifiedlead".into())));
        assert!(back.contains(&("hs_lead_status".into(), "IN_PROGRESS".into())));
    }

    #[test]
    fn unknown_field_names_the_key() {
        let mut raw = FieldMap::hubspot_contact_default();
        raw.fields.insert("frist_name".into(), "x".into());
        let e = FieldMap::from_raw(&raw, "systems.marketing.mapping").expect_err("must fail");
        assert_eq!(e.key, "systems.marketing.mapping.fields.frist_name");
    }

    #[test]
    fn unknown_vendor_values_are_not_guessed() {
        let m = hs();
        let props = [("lifecyclestage".to_string(), Some("12345".to_string()))].into();
        assert!(m.to_canonical(&props).is_empty());
    }
}
