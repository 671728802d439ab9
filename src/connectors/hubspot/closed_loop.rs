//! Closed-loop polling for HubSpot: deals with their contacts, and form conversions on
//! contacts as campaign touches.
//!
//! Deals: the same keyset scan as contacts (`poll.rs`), on `hs_lastmodifieddate` of
//! `POST /crm/v3/objects/deals/search`, then one `POST /crm/v4/associations/deals/contacts/
//! batch/read` per page for the contacts of the deals it returned (following each input's
//! `paging.next.after`). That batch read is chosen over `GET /crm/v4/objects/deals/{id}/
//! associations/contacts` because it answers for up to 1,000 deals in one call. An association
//! change updates the deal's computed `num_associated_contacts`, which moves
//! `hs_lastmodifieddate`, so polling deals alone sees contacts added or removed.
//!
//! Touches: HubSpot has two ways to read form submissions. The forms API
//! (`GET /form-integrations/v1/submissions/forms/{guid}`) is per form, newest first, at most 50
//! a page, and names no contact (only the submitted field values, email among them), so a
//! client would list every form, page each one backwards to its watermark and match people by
//! email. The contact properties HubSpot analytics writes on each conversion
//! (`first_conversion_event_name`/`_date`, `recent_conversion_event_name`/`_date`,
//! `hs_analytics_source`) carry the contact id, are searchable, and give exactly the first and
//! the last touch that attribution needs. We read those: a keyset scan of contacts search on
//! `recent_conversion_date`. Each page's contacts give a touch for the recent conversion and,
//! when it differs, for the first one; `touch_id` is `<contact>:<event>:<epoch ms>`, so
//! re-reading is idempotent. What this misses: a contact who converts several times between
//! two polls shows only the latest of those (plus the first ever); the forms API would be the
//! way to get every submission.
//!
//! Not reported: archived deals (search never returns them; a sweep of
//! `GET /crm/v3/objects/deals?archived=true` would, as the contacts poll does).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::poll::{Obs, PollCursor};
use super::wire_closed_loop::{
    AssocInput, AssocPage, AssocRead, CONVERSION_PROPERTIES, CrmObject, DEAL_MODIFIED,
    DEAL_PROPERTIES, RECENT_CONVERSION, SearchPage,
};
use super::{HubspotConnector, Inner};
use crate::connectors::closed_loop::{ClosedLoopPage, ClosedLoopSource};
use crate::connectors::{ConnectorError, Cursor};
use crate::domain::RemoteId;
use crate::domain::closed_loop::{
    CampaignTouch, Opportunity, OpportunityContact, TouchKind, parse_amount_cents,
};

/// Most deals per associations batch read.
const ASSOC_BATCH: usize = 1000;
/// Most follow-up association reads for one page (a deal with thousands of contacts).
const ASSOC_ROUNDS: usize = 20;

#[derive(Debug, Serialize, Deserialize)]
struct Positions {
    deals: PollCursor,
    conversions: PollCursor,
}

fn instant(raw: Option<&str>) -> Option<DateTime<Utc>> {
    let raw = raw?;
    if let Ok(ms) = raw.parse::<i64>() {
        return DateTime::from_timestamp_millis(ms);
    }
    DateTime::parse_from_rfc3339(raw).ok().map(|t| t.with_timezone(&Utc))
}

fn contact(id: &str) -> RemoteId {
    RemoteId { object_type: super::OBJECT_TYPE.into(), id: id.into() }
}

fn search_body(
    pc: &PollCursor,
    prop: &'static str,
    page: u32,
    props: &[&str],
) -> super::wire::SearchRequest {
    pc.query_on(prop, page, props.iter().map(|p| (*p).to_owned()).collect())
}

impl Inner {
    fn overlap_ms(&self) -> i64 {
        i64::try_from(self.cfg.overlap.as_millis()).unwrap_or(i64::MAX)
    }

    /// One keyset page of `object` search on `prop`: the records to emit, the next cursor,
    /// whether the scan caught up.
    async fn scan(
        &self,
        pc: &PollCursor,
        object: &str,
        prop: &'static str,
        props: &[&str],
    ) -> Result<(Vec<CrmObject>, PollCursor, bool), ConnectorError> {
        let page = self.cfg.page_size;
        let body = search_body(pc, prop, page, props);
        let fetched = Utc::now().timestamp_millis();
        let version = self.client.version().to_owned();
        let resp: SearchPage = self
            .client
            .post_read(
                &["crm", &version, "objects", object, "search"],
                &body,
                true,
                "closed_loop_search",
            )
            .await?;
        let obs: Vec<Obs> = resp
            .results
            .iter()
            .map(|o| Obs {
                id: o.id.clone(),
                ts_ms: instant(o.prop(prop)).map(|t| t.timestamp_millis()),
            })
            .collect();
        let full = resp.results.len() >= page as usize
            || (resp.paging.is_some() && !resp.results.is_empty());
        let step = pc.step(&obs, full, fetched, self.overlap_ms());
        let emit =
            resp.results.into_iter().zip(step.emit).filter_map(|(o, e)| e.then_some(o)).collect();
        Ok((emit, step.next, step.caught_up))
    }

    /// The contacts of these deals, in association order, with their labels.
    async fn deal_contacts(
        &self,
        deals: &[String],
    ) -> Result<HashMap<String, Vec<OpportunityContact>>, ConnectorError> {
        let mut out: HashMap<String, Vec<OpportunityContact>> = HashMap::new();
        for chunk in deals.chunks(ASSOC_BATCH) {
            let mut inputs: Vec<AssocInput> =
                chunk.iter().map(|id| AssocInput { id: id.clone(), after: None }).collect();
            for _ in 0..ASSOC_ROUNDS {
                if inputs.is_empty() {
                    break;
                }
                let resp: AssocPage = self
                    .client
                    .post_read(
                        &["crm", "v4", "associations", "deals", "contacts", "batch", "read"],
                        &AssocRead { inputs },
                        false,
                        "deal_contacts",
                    )
                    .await?;
                inputs = Vec::new();
                for r in resp.results {
                    let list = out.entry(r.from.id.clone()).or_default();
                    for t in r.to {
                        let id = match &t.to_object_id {
                            serde_json::Value::Number(n) => n.to_string(),
                            serde_json::Value::String(s) => s.clone(),
                            _ => continue,
                        };
                        let role = t.association_types.into_iter().find_map(|a| a.label);
                        list.push(OpportunityContact {
                            person: contact(&id),
                            primary: false,
                            role,
                        });
                    }
                    if let Some(next) = r.paging.and_then(|p| p.next) {
                        inputs.push(AssocInput { id: r.from.id, after: Some(next.after) });
                    }
                }
            }
        }
        Ok(out)
    }

    async fn closed_loop_page(&self, cursor: &Cursor) -> Result<ClosedLoopPage, ConnectorError> {
        let pos = match cursor.0.as_deref() {
            None => {
                Positions { deals: PollCursor::start_at(0), conversions: PollCursor::start_at(0) }
            }
            Some(text) => serde_json::from_str(text).map_err(|_| {
                ConnectorError::Config("stored hubspot closed-loop cursor is not readable".into())
            })?,
        };
        let (deals, next_deals, deals_done) =
            self.scan(&pos.deals, "deals", DEAL_MODIFIED, DEAL_PROPERTIES).await?;
        let ids: Vec<String> = deals.iter().map(|d| d.id.clone()).collect();
        let mut contacts = self.deal_contacts(&ids).await?;
        let mut opportunities = Vec::with_capacity(deals.len());
        for d in deals {
            let Some(modified_at) = instant(d.prop(DEAL_MODIFIED)) else { continue };
            let mut list = contacts.remove(&d.id).unwrap_or_default();
            // HubSpot has no primary contact on a deal; the first associated one stands in.
            if let Some(first) = list.first_mut() {
                first.primary = true;
            }
            opportunities.push(Opportunity {
                remote: RemoteId { object_type: "deal".into(), id: d.id.clone() },
                name: d.prop("dealname").map(str::to_owned),
                amount_cents: d.prop("amount").and_then(parse_amount_cents),
                currency: d.prop("deal_currency_code").map(str::to_owned),
                stage: d.prop("dealstage").unwrap_or_default().to_owned(),
                pipeline: d.prop("pipeline").map(str::to_owned),
                is_closed: d.prop("hs_is_closed") == Some("true"),
                is_won: d.prop("hs_is_closed_won") == Some("true"),
                close_date: instant(d.prop("closedate")).map(|t| t.date_naive()),
                primary_campaign: None,
                contacts: list,
                created_at: instant(d.prop("createdate")),
                modified_at,
                deleted: d.archived,
            });
        }

        let (people, next_conv, conv_done) = self
            .scan(&pos.conversions, "contacts", RECENT_CONVERSION, CONVERSION_PROPERTIES)
            .await?;
        let mut touches = Vec::new();
        for p in people {
            let recent =
                (p.prop("recent_conversion_event_name"), instant(p.prop("recent_conversion_date")));
            let first =
                (p.prop("first_conversion_event_name"), instant(p.prop("first_conversion_date")));
            let mut events = vec![recent];
            if first != recent {
                events.push(first);
            }
            for (name, at) in events {
                let (Some(name), Some(at)) = (name, at) else { continue };
                touches.push(CampaignTouch {
                    touch_id: format!("{}:{name}:{}", p.id, at.timestamp_millis()),
                    person: contact(&p.id),
                    lead: None,
                    campaign_id: name.to_owned(),
                    campaign_name: Some(name.to_owned()),
                    kind: TouchKind::FormSubmission,
                    at,
                    responded: true,
                    responded_on: Some(at.date_naive()),
                    modified_at: at,
                    deleted: false,
                });
            }
        }
        let next = Positions { deals: next_deals, conversions: next_conv };
        let text = serde_json::to_string(&next).map_err(|e| {
            ConnectorError::Config(format!("cannot encode closed-loop cursor: {e}"))
        })?;
        Ok(ClosedLoopPage {
            opportunities,
            touches,
            activities: Vec::new(),
            next_cursor: Cursor(Some(text)),
            poll_again_after: if deals_done && conv_done {
                self.cfg.poll_interval
            } else {
                Duration::ZERO
            },
        })
    }
}

impl ClosedLoopSource for HubspotConnector {
    async fn poll_closed_loop(&self, cursor: &Cursor) -> Result<ClosedLoopPage, ConnectorError> {
        self.inner.closed_loop_page(cursor).await
    }
}
