//! Consent only tightens: leadsync never re-subscribes anyone (HubSpot and Mailchimp forbid it
//! through their APIs, api-facts §1.3 and §5; a CRM would let it happen silently).
//!
//! The planner already writes opt-outs only as `"true"` (`reconcile::diff_for_push` and the
//! create path drop `"false"`), and the HubSpot connector never writes `hs_email_optout`. Two
//! guards here make a re-subscription impossible even through configuration or a planner bug:
//!
//! - [`check_map`], at settings load: no canonical field other than `email_opt_out` may map to a
//!   vendor's opt-out property (writing, say, `lead_source = "false"` into
//!   `HasOptedOutOfEmail` would re-subscribe people). A settings error names the key.
//! - [`refuse_resubscribes`], before every push call: a record whose fields carry
//!   `email_opt_out` with any value but `"true"` is refused as a dead letter with code
//!   [`RESUBSCRIBE_REFUSED`] and never sent.

use crate::domain::{Field, PushOutcome, PushRecord};

use super::{FieldMap, KeyError};

/// The dead-letter code of a push refused because it would clear an opt-out.
pub const RESUBSCRIBE_REFUSED: &str = "resubscribe_refused";

/// Refuse a mapping that lets another canonical field write a vendor's opt-out property.
/// `opt_out_properties` are the vendor's email opt-out properties (compared
/// case-insensitively, as Salesforce field names are); `prefix` is the mapping's config key.
///
/// # Errors
/// Names `<prefix>.fields.<field>` of the first field mapped to an opt-out property.
pub fn check_map(
    map: &FieldMap,
    prefix: &str,
    opt_out_properties: &[&str],
) -> Result<(), KeyError> {
    for field in Field::ALL.into_iter().filter(|f| *f != Field::EmailOptOut) {
        let Some(prop) = map.property(field) else { continue };
        if opt_out_properties.iter().any(|o| o.eq_ignore_ascii_case(prop)) {
            return Err(KeyError::new(
                format!("{prefix}.fields.{field}"),
                format!(
                    "{prop} is the email opt-out; only email_opt_out may map to it (a write \
                     from another field could re-subscribe people, which leadsync refuses)"
                ),
            ));
        }
    }
    Ok(())
}

/// The records of a push batch that would clear an opt-out, each refused with
/// [`RESUBSCRIBE_REFUSED`]. The caller sends only the others.
pub fn refuse_resubscribes(batch: &[PushRecord]) -> Vec<PushOutcome> {
    batch
        .iter()
        .filter(|r| r.fields.get(&Field::EmailOptOut).is_some_and(|v| v != "true"))
        .map(|r| {
            tracing::warn!(
                outbox_id = r.outbox_id,
                lead_id = %r.ledger_key,
                "push refused: it would clear an email opt-out"
            );
            PushOutcome::Rejected {
                outbox_id: r.outbox_id,
                code: RESUBSCRIBE_REFUSED.into(),
                message: "a push may not clear an email opt-out (leadsync never re-subscribes)"
                    .into(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::connectors::field_map::FieldMapRaw;
    use crate::domain::{Fields, PushOp, RemoteId};

    fn map(fields: &[(&str, &str)]) -> FieldMap {
        let raw = FieldMapRaw {
            fields: fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..FieldMapRaw::default()
        };
        FieldMap::from_raw(&raw, "systems.crm.mapping").expect("valid map")
    }

    #[test]
    fn another_field_on_the_opt_out_property_is_a_settings_error() {
        let bad = map(&[("email", "Email"), ("lead_source", "hasoptedoutofemail")]);
        let err =
            check_map(&bad, "systems.crm.mapping", &["HasOptedOutOfEmail"]).expect_err("refused");
        assert_eq!(err.key, "systems.crm.mapping.fields.lead_source");
        assert!(err.problem.contains("only email_opt_out"), "{err}");
        let good = map(&[("email", "Email"), ("email_opt_out", "HasOptedOutOfEmail")]);
        check_map(&good, "systems.crm.mapping", &["HasOptedOutOfEmail"]).expect("fine");
    }

    fn record(id: i64, opt_out: Option<&str>) -> PushRecord {
        let mut fields: Fields = BTreeMap::new();
        fields.insert(Field::FirstName, "Ann".into());
        if let Some(v) = opt_out {
            fields.insert(Field::EmailOptOut, v.into());
        }
        PushRecord {
            outbox_id: id,
            ledger_key: format!("lead-{id}"),
            op: PushOp::Update { remote: RemoteId { object_type: "Lead".into(), id: "x".into() } },
            fields: fields.clone(),
            person: fields,
            stage_dates: Default::default(),
            stage_reason: None,
            owner: None,
        }
    }

    #[test]
    fn a_push_that_clears_an_opt_out_is_refused_and_others_pass() {
        let batch = [record(1, None), record(2, Some("true")), record(3, Some("false"))];
        let refused = refuse_resubscribes(&batch);
        assert_eq!(refused.len(), 1);
        match &refused[0] {
            PushOutcome::Rejected { outbox_id, code, .. } => {
                assert_eq!(*outbox_id, 3);
                assert_eq!(code, RESUBSCRIBE_REFUSED);
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
}
