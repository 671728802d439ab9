//! Vendor properties the lead contract reads besides the canonical fields: each declared
//! custom field (`[contract] fields`, e.g. a score or a country) mapped to one property of a
//! system through `[contract.mapping.custom_fields.<system>]`.
//!
//! They are read-only inputs to the qualification rules: a connector asks for them on every
//! read and carries their raw values on [`Change::custom`](crate::domain::Change), and leadsync
//! never writes them (they are not canonical fields, so no push can name them).
//!
//! The other way round, the date a person last entered a stage is written to the property
//! `[contract.mapping.stage_dates.<system>]` names for it; leadsync never reads those back,
//! so they cannot conflict with anything.
//!
//! A CRM-role system under `[contract.sla]` also reads the record's own last-activity
//! property (Salesforce `LastActivityDate`, HubSpot `notes_last_contacted`; each connector
//! knows its name) onto [`Change::last_activity`](crate::domain::Change): an SLA touch.
//!
//! Two more writes ride on a push the same way, never read back either: the reason code of
//! the person's latest named transition, to the property `[contract.mapping.stage_reason]`
//! names for the system (`""` clears it once the person moved on), and, at the CRM-role
//! system only, the owner an SLA escalation reassigns the record to
//! (`[contract.sla] reassign_to`). The vendor's own owner field carries it (Salesforce
//! `OwnerId`, HubSpot `hubspot_owner_id`): leadsync writes it once per escalation and never
//! again, so a later human reassignment stands.

use std::collections::BTreeMap;

/// How a stage-entry date is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DateKind {
    /// The instant (HubSpot `datetime`, Salesforce `DateTime`).
    #[default]
    DateTime,
    /// The UTC calendar date (HubSpot `date`, Salesforce `Date`).
    Date,
}

/// The vendor property a stage's entry date is written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageDateProp {
    pub property: String,
    pub kind: DateKind,
}

/// The contract properties one system is read and written with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContractProps {
    /// Declared custom field -> vendor property.
    custom: BTreeMap<String, String>,
    /// Stage name -> the property its latest entry date is written to.
    stage_dates: BTreeMap<String, StageDateProp>,
    /// The property the latest named transition's reason code is written to.
    stage_reason: Option<String>,
    /// Whether this system takes owner reassignments (the CRM-role system).
    owner: bool,
    /// Read the vendor's last-activity property (`[contract.sla] last_activity_touches`).
    last_activity: bool,
}

impl ContractProps {
    /// `custom`: declared field -> vendor property, as validated by the contract config.
    pub fn new(custom: BTreeMap<String, String>) -> ContractProps {
        ContractProps {
            custom,
            stage_dates: BTreeMap::new(),
            stage_reason: None,
            owner: false,
            last_activity: false,
        }
    }

    /// Write the latest named transition's reason code to this property.
    #[must_use]
    pub fn with_stage_reason(mut self, property: Option<String>) -> Self {
        self.stage_reason = property;
        self
    }

    /// Take SLA owner reassignments (set for the CRM-role system).
    #[must_use]
    pub fn with_owner(mut self, owner: bool) -> Self {
        self.owner = owner;
        self
    }

    /// The property the latest named transition's reason code is written to.
    pub fn stage_reason(&self) -> Option<&str> {
        self.stage_reason.as_deref()
    }

    /// The (property, value) pair for the reason code a push carries (`""`: clear it), when
    /// this system maps one; `None` otherwise.
    pub fn stage_reason_value(&self, reason: Option<&str>) -> Option<(String, String)> {
        Some((self.stage_reason.clone()?, reason?.to_string()))
    }

    /// The owner id a push reassigns the record to, when this system takes reassignments.
    pub fn owner_value<'a>(&self, owner: Option<&'a str>) -> Option<&'a str> {
        owner.filter(|_| self.owner)
    }

    /// Read the record's last-activity property too (an SLA touch).
    #[must_use]
    pub fn with_last_activity(mut self, on: bool) -> Self {
        self.last_activity = on;
        self
    }

    /// Whether the connector reads the record's last-activity property.
    pub fn reads_last_activity(&self) -> bool {
        self.last_activity
    }

    /// Write stage-entry dates: stage name (`mql`) -> property.
    #[must_use]
    pub fn with_stage_dates(mut self, stage_dates: BTreeMap<String, StageDateProp>) -> Self {
        self.stage_dates = stage_dates;
        self
    }

    /// Stage name -> the property its entry date is written to.
    pub fn stage_dates(&self) -> impl Iterator<Item = (&str, &StageDateProp)> {
        self.stage_dates.iter().map(|(s, p)| (s.as_str(), p))
    }

    /// The (property, value) pairs for the stage-entry dates of a push (stage name -> the
    /// latest entry), each formatted by `format` for its kind; stages without a property are
    /// left out.
    pub fn stage_date_values(
        &self,
        dates: &BTreeMap<String, chrono::DateTime<chrono::Utc>>,
        format: impl Fn(chrono::DateTime<chrono::Utc>, DateKind) -> String,
    ) -> Vec<(String, String)> {
        dates
            .iter()
            .filter_map(|(stage, at)| {
                let p = self.stage_dates.get(stage)?;
                Some((p.property.clone(), format(*at, p.kind)))
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.custom.is_empty()
            && self.stage_dates.is_empty()
            && self.stage_reason.is_none()
            && !self.last_activity
    }

    /// Declared field -> vendor property.
    pub fn custom(&self) -> impl Iterator<Item = (&str, &str)> {
        self.custom.iter().map(|(f, p)| (f.as_str(), p.as_str()))
    }

    /// Every vendor property to ask for, for `properties=` lists and `SELECT` lists.
    pub fn properties(&self) -> impl Iterator<Item = &str> {
        self.custom.values().map(String::as_str)
    }

    /// The raw values of the mapped properties by declared field name, looked up with `get`
    /// (so each vendor decides how names match). A property the record does not carry, or
    /// carries as null or blank, reads as `None`: the record says the field is empty.
    pub fn values(&self, get: impl Fn(&str) -> Option<String>) -> BTreeMap<String, Option<String>> {
        self.custom
            .iter()
            .map(|(field, prop)| {
                let v = get(prop).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
                (field.clone(), v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_keyed_by_field_and_blank_reads_as_none() {
        let p = ContractProps::new(
            [("score", "hubspotscore"), ("country", "country"), ("region", "region")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .into(),
        );
        let record: BTreeMap<&str, &str> = [("hubspotscore", " 61 "), ("country", "  ")].into();
        let v = p.values(|prop| record.get(prop).map(|v| v.to_string()));
        assert_eq!(v.get("score"), Some(&Some("61".to_string())));
        assert_eq!(v.get("country"), Some(&None));
        assert_eq!(v.get("region"), Some(&None), "an absent property reads as empty");
        assert_eq!(v.len(), 3);
        let mut props: Vec<&str> = p.properties().collect();
        props.sort_unstable();
        assert_eq!(props, ["country", "hubspotscore", "region"]);
    }

    #[test]
    fn the_reason_and_the_owner_are_written_only_where_configured() {
        let none = ContractProps::default();
        assert_eq!(none.stage_reason_value(Some("sla_expired")), None);
        assert_eq!(none.owner_value(Some("0051")), None, "only the CRM takes owners");
        let p = ContractProps::default()
            .with_stage_reason(Some("LeadSync_Reason__c".into()))
            .with_owner(true);
        assert!(!p.is_empty());
        assert_eq!(
            p.stage_reason_value(Some("sla_expired")),
            Some(("LeadSync_Reason__c".into(), "sla_expired".into()))
        );
        assert_eq!(
            p.stage_reason_value(Some("")),
            Some(("LeadSync_Reason__c".into(), String::new())),
            "an empty reason clears the property"
        );
        assert_eq!(p.stage_reason_value(None), None, "a push without a reason leaves it alone");
        assert_eq!(p.owner_value(Some("0051")), Some("0051"));
        assert_eq!(p.owner_value(None), None);
    }
}
