//! Closed-loop polling for Salesforce: Opportunity with OpportunityContactRole,
//! CampaignMember with its Campaign's name, and Task as sales activities, read through
//! `queryAll` (deleted rows come back with `IsDeleted = true` and are reported as deleted).
//!
//! Four keyset streams on `(SystemModstamp, Id)`, each with its own position in the cursor
//! (the same cursor code and overlap re-scan as the lead poll, keyed by object name):
//! `Opportunity`, `OpportunityContactRole`, `CampaignMember` and `Task`. A cursor written
//! before Tasks were read has no `Task` position: the first poll then reads every Task. Contact roles are separate
//! records: adding or removing one does not move the opportunity's `SystemModstamp`. So a page
//! reports every opportunity whose own row or any of whose roles changed, re-reading such
//! opportunities by id and their live roles with `WHERE OpportunityId IN (…)`, and always
//! carries the complete current contact list. Campaign names come from one
//! `SELECT Id, Name FROM Campaign WHERE Id IN (…)` per page. A membership names the Contact
//! when it has one (a converted lead's membership names both; the lead goes in `lead`).
//!
//! Tasks: every Task whose `WhoId` names a Lead or Contact (by key prefix) becomes an
//! [`Activity`] at its `CreatedDate`, completed when `IsClosed`; Tasks on nobody (only a
//! `WhatId`) are skipped. `Call` is a call, `Email`/`ListEmail` an email, any other subtype
//! other. Events (meetings) are not read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

use super::cursor::{self, PollState, Positions};
use super::mapping::{Position, parse_datetime};
use super::wire::Record;
use super::wire_closed_loop::{
    CampaignRow, MEMBER_FIELDS, MemberRow, OPPORTUNITY_FIELDS, OpportunityRow, ROLE_FIELDS,
    RoleRow, SUBTYPE_CALL, SUBTYPES_EMAIL, TASK_FIELDS, TaskRow, WHO_PREFIXES, row,
};
use super::{Inner, SalesforceConnector};
use crate::connectors::closed_loop::{ClosedLoopPage, ClosedLoopSource};
use crate::connectors::{ConnectorError, Cursor};
use crate::domain::RemoteId;
use crate::domain::closed_loop::{
    Activity, ActivityKind, CampaignTouch, Opportunity, OpportunityContact, TouchKind,
    parse_amount_cents,
};

/// Ids per `WHERE … IN (…)` query: 200 ids of 20 characters keep the SOQL near 4 KB.
const IDS_PER_QUERY: usize = 200;

fn bad(what: &str) -> ConnectorError {
    tracing::warn!(connector = "salesforce", object = what, "unusable closed-loop record");
    ConnectorError::Transient(format!("salesforce {what} record lacks a usable field"))
}

fn stamp(raw: &str, what: &str) -> Result<DateTime<Utc>, ConnectorError> {
    parse_datetime(raw).ok_or_else(|| bad(what))
}

fn date(raw: Option<&str>) -> Option<NaiveDate> {
    raw.and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
}

/// Ids are pasted into SOQL: only accept what a Salesforce id looks like.
fn id_ok(id: &str) -> bool {
    (15..=18).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn in_list(ids: &[String]) -> String {
    ids.iter().map(|i| format!("'{i}'")).collect::<Vec<_>>().join(", ")
}

fn remote(object_type: &str, id: &str) -> RemoteId {
    RemoteId { object_type: object_type.into(), id: id.into() }
}

impl Inner {
    /// One page of one stream from its state: the records not seen before, the next state,
    /// and whether the page was full.
    async fn poll_stream(
        &self,
        object: &str,
        fields: &[&str],
        state: Option<&PollState>,
    ) -> Result<(Vec<Record>, Option<PollState>, bool), ConnectorError> {
        let soql = cursor::poll_soql(fields, object, &cursor::start_of(state), self.page_size);
        let records = self.client.query_all(&soql, self.page_size).await?;
        let mut fresh = Vec::with_capacity(records.len());
        let mut positions = Vec::with_capacity(records.len());
        for rec in records.iter() {
            let id = rec.get("Id").and_then(|v| v.as_str()).filter(|i| id_ok(i));
            let ts = rec.get("SystemModstamp").and_then(|v| v.as_str()).and_then(parse_datetime);
            let (Some(id), Some(ts)) = (id, ts) else { return Err(bad(object)) };
            let pos = Position { ts, id: id.to_owned() };
            if !state.is_some_and(|s| s.has_seen(&pos)) {
                fresh.push(rec.clone());
            }
            positions.push(pos);
        }
        let full = records.len() >= self.page_size as usize;
        Ok((fresh, cursor::advance(state, &positions, full, self.overlap), full))
    }

    /// `SELECT <fields> FROM <object> WHERE <field> IN (…)` through `queryAll`, in chunks.
    async fn by_ids(
        &self,
        object: &str,
        fields: &[&str],
        field: &str,
        ids: &[String],
    ) -> Result<Vec<Record>, ConnectorError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let soql = format!(
                "SELECT {} FROM {object} WHERE {field} IN ({})",
                fields.join(", "),
                in_list(chunk)
            );
            out.extend(self.client.query_all(&soql, self.page_size).await?);
        }
        Ok(out)
    }

    async fn closed_loop_page(&self, cursor_in: &Cursor) -> Result<ClosedLoopPage, ConnectorError> {
        let mut positions: Positions = cursor::decode_all(cursor_in)?;
        let mut any_full = false;

        // Opportunities whose own row changed, and those whose roles changed.
        let state = positions.objects.get("Opportunity");
        let (opp_recs, next, full) =
            self.poll_stream("Opportunity", OPPORTUNITY_FIELDS, state).await?;
        any_full |= full;
        let next_opp = next;
        let state = positions.objects.get("OpportunityContactRole");
        let (role_recs, next_role, full) =
            self.poll_stream("OpportunityContactRole", ROLE_FIELDS, state).await?;
        any_full |= full;

        let mut opps: BTreeMap<String, (OpportunityRow, DateTime<Utc>)> = BTreeMap::new();
        for rec in &opp_recs {
            let r: OpportunityRow = row(rec).ok_or_else(|| bad("Opportunity"))?;
            let ts = stamp(&r.system_modstamp, "Opportunity")?;
            opps.insert(r.id.clone(), (r, ts));
        }
        let mut role_touched: HashMap<String, DateTime<Utc>> = HashMap::new();
        for rec in &role_recs {
            let r: RoleRow = row(rec).ok_or_else(|| bad("OpportunityContactRole"))?;
            if !id_ok(&r.opportunity_id) {
                return Err(bad("OpportunityContactRole"));
            }
            let ts = stamp(&r.system_modstamp, "OpportunityContactRole")?;
            let e = role_touched.entry(r.opportunity_id).or_insert(ts);
            *e = (*e).max(ts);
        }
        let missing: Vec<String> =
            role_touched.keys().filter(|id| !opps.contains_key(*id)).cloned().collect();
        for rec in self.by_ids("Opportunity", OPPORTUNITY_FIELDS, "Id", &missing).await? {
            let r: OpportunityRow = row(&rec).ok_or_else(|| bad("Opportunity"))?;
            let ts = stamp(&r.system_modstamp, "Opportunity")?;
            opps.insert(r.id.clone(), (r, ts));
        }
        let ids: Vec<String> = opps.keys().cloned().collect();
        let mut roles: HashMap<String, Vec<RoleRow>> = HashMap::new();
        for rec in self.by_ids("OpportunityContactRole", ROLE_FIELDS, "OpportunityId", &ids).await?
        {
            let r: RoleRow = row(&rec).ok_or_else(|| bad("OpportunityContactRole"))?;
            if !r.is_deleted && r.contact_id.is_some() {
                roles.entry(r.opportunity_id.clone()).or_default().push(r);
            }
        }
        let mut opportunities = Vec::with_capacity(opps.len());
        for (id, (r, ts)) in opps {
            let mut list = roles.remove(&id).unwrap_or_default();
            // Primary first, then by role record id (creation order): a stable order.
            list.sort_by(|a, b| b.is_primary.cmp(&a.is_primary).then_with(|| a.id.cmp(&b.id)));
            let contacts = list
                .into_iter()
                .filter_map(|x| {
                    Some(OpportunityContact {
                        person: remote("Contact", &x.contact_id?),
                        primary: x.is_primary,
                        role: x.role,
                    })
                })
                .collect();
            let modified_at = role_touched.get(&id).map_or(ts, |t| (*t).max(ts));
            opportunities.push(Opportunity {
                remote: remote("Opportunity", &id),
                name: r.name,
                amount_cents: r.amount.as_ref().and_then(|v| parse_amount_cents(&v.to_string())),
                currency: None,
                stage: r.stage_name.unwrap_or_default(),
                pipeline: None,
                is_closed: r.is_closed,
                is_won: r.is_won,
                close_date: date(r.close_date.as_deref()),
                primary_campaign: r.campaign_id,
                contacts,
                created_at: r.created_date.as_deref().and_then(parse_datetime),
                modified_at,
                deleted: r.is_deleted,
            });
        }
        opportunities.sort_by(|a, b| {
            a.modified_at.cmp(&b.modified_at).then_with(|| a.remote.id.cmp(&b.remote.id))
        });

        // Campaign touches.
        let state = positions.objects.get("CampaignMember");
        let (member_recs, next_member, full) =
            self.poll_stream("CampaignMember", MEMBER_FIELDS, state).await?;
        any_full |= full;
        let mut members = Vec::with_capacity(member_recs.len());
        for rec in &member_recs {
            let m: MemberRow = row(rec).ok_or_else(|| bad("CampaignMember"))?;
            if !id_ok(&m.campaign_id) {
                return Err(bad("CampaignMember"));
            }
            members.push(m);
        }
        let campaign_ids: Vec<String> = members
            .iter()
            .map(|m| m.campaign_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut names: HashMap<String, Option<String>> = HashMap::new();
        for rec in self.by_ids("Campaign", &["Id", "Name"], "Id", &campaign_ids).await? {
            let c: CampaignRow = row(&rec).ok_or_else(|| bad("Campaign"))?;
            names.insert(c.id, c.name);
        }
        let mut touches = Vec::with_capacity(members.len());
        for m in members {
            let modified_at = stamp(&m.system_modstamp, "CampaignMember")?;
            let lead = m.lead_id.as_deref().map(|id| remote("Lead", id));
            let person = match (&m.contact_id, &lead) {
                (Some(c), _) => remote("Contact", c),
                (None, Some(l)) => l.clone(),
                (None, None) => return Err(bad("CampaignMember")),
            };
            let lead = if m.contact_id.is_some() { lead } else { None };
            touches.push(CampaignTouch {
                touch_id: m.id,
                person,
                lead,
                campaign_name: names.get(&m.campaign_id).cloned().flatten(),
                campaign_id: m.campaign_id,
                kind: TouchKind::CampaignMember,
                at: m.created_date.as_deref().and_then(parse_datetime).unwrap_or(modified_at),
                responded: m.has_responded,
                responded_on: date(m.first_responded_date.as_deref()),
                modified_at,
                deleted: m.is_deleted,
            });
        }

        // Sales activities.
        let state = positions.objects.get("Task");
        let (task_recs, next_task, full) = self.poll_stream("Task", TASK_FIELDS, state).await?;
        any_full |= full;
        let mut activities = Vec::with_capacity(task_recs.len());
        for rec in &task_recs {
            let t: TaskRow = row(rec).ok_or_else(|| bad("Task"))?;
            if let Some(a) = activity(t)? {
                activities.push(a);
            }
        }

        for (name, next) in [
            ("Opportunity", next_opp),
            ("OpportunityContactRole", next_role),
            ("CampaignMember", next_member),
            ("Task", next_task),
        ] {
            if let Some(n) = next {
                positions.objects.insert(name.to_owned(), n);
            }
        }
        tracing::debug!(
            connector = "salesforce",
            opportunities = opportunities.len(),
            touches = touches.len(),
            activities = activities.len(),
            "closed-loop page"
        );
        Ok(ClosedLoopPage {
            opportunities,
            touches,
            activities,
            next_cursor: cursor::encode_all(&positions),
            poll_again_after: if any_full { Duration::ZERO } else { self.poll_interval },
        })
    }
}

/// A Task as an activity; `None` for a Task on nobody (no `WhoId`, or one naming neither a
/// Lead nor a Contact).
fn activity(t: TaskRow) -> Result<Option<Activity>, ConnectorError> {
    let modified_at = stamp(&t.system_modstamp, "Task")?;
    let Some(who) = t.who_id.filter(|w| id_ok(w)) else { return Ok(None) };
    let Some((_, object_type)) = WHO_PREFIXES.iter().find(|(p, _)| who.starts_with(p)) else {
        return Ok(None);
    };
    let kind = match t.task_subtype.as_deref() {
        Some(SUBTYPE_CALL) => ActivityKind::Call,
        Some(s) if SUBTYPES_EMAIL.contains(&s) => ActivityKind::Email,
        _ => ActivityKind::Other,
    };
    Ok(Some(Activity {
        activity_id: t.id,
        who_remote_id: remote(object_type, &who),
        kind,
        at: t.created_date.as_deref().and_then(parse_datetime).unwrap_or(modified_at),
        completed: t.is_closed,
        modified_at,
        deleted: t.is_deleted,
    }))
}

impl ClosedLoopSource for SalesforceConnector {
    async fn poll_closed_loop(&self, cursor: &Cursor) -> Result<ClosedLoopPage, ConnectorError> {
        self.inner.closed_loop_page(cursor).await
    }
}
