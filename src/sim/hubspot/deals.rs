//! Deals and deal→contact associations on the simulated portal, plus form conversions on
//! contacts: the closed-loop side of HubSpot.
//!
//! Served (behind the same auth, rate limits, quota and injected faults as contacts):
//! - `GET /crm/v3/objects/deals` (`limit` ≤ 100, else 400; `after`; `properties`; `archived`),
//! - `POST /crm/v3/objects/deals/batch/read` (≤ 100 inputs; unknown ids → 207
//!   `OBJECT_NOT_FOUND` naming them),
//! - `POST /crm/v3/objects/deals/search` (search lane: 4/s, no rate headers; filters `EQ NEQ
//!   GT GTE LT LTE` on any deal property, numeric and datetime ones compared as numbers;
//!   one sort; `limit` ≤ 200; `after` an offset; past 10,000 results 400),
//! - `POST /crm/v4/associations/deals/contacts/batch/read` (≤ 1,000 inputs; each result
//!   `{from:{id}, to:[{toObjectId, associationTypes:[{category:"HUBSPOT_DEFINED", typeId:3,
//!   label:null}]}]}`, contacts in id order, up to 500 per input with `paging.next.after` for
//!   the rest; deals without contacts are left out of `results`, unknown ones too, as 207
//!   errors). This is the endpoint a client reading many deals' contacts uses: one call per
//!   page of deals, where `GET /crm/v4/objects/deals/{id}/associations/contacts` costs one call
//!   per deal.
//!
//! Deal properties: `dealname, amount, dealstage, pipeline, closedate, deal_currency_code`
//! (writable), and computed `hs_is_closed, hs_is_closed_won` (from the stage's metadata in the
//! default pipeline: `closedwon` is closed and won, `closedlost` closed and lost),
//! `num_associated_contacts`, `createdate`, `hs_lastmodifieddate`, `hs_object_id`. Choices
//! where HubSpot's docs are silent: an association change updates `num_associated_contacts`
//! and so moves the deal's `hs_lastmodifieddate` (a computed property changing is a change of
//! the record), which is what lets a client poll deals alone and still see new contacts;
//! `amount` is kept as the string written; `closedate` is stored as epoch ms and returned as
//! ISO-8601 (`2026-03-31T00:00:00.000Z`).
//!
//! Form conversions: [`super::HubspotSim::submit_form`] records a conversion on a contact the
//! way HubSpot's analytics do, in read-only contact properties: `recent_conversion_event_name`
//! and `recent_conversion_date` always, `first_conversion_event_name` and
//! `first_conversion_date` the first time, `num_conversion_events` counts, and
//! `hs_analytics_source` (original source, set once; `OFFLINE` unless given). The contact's
//! `lastmodifieddate` moves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Inner;
use super::server::ApiError;
use super::store::{iso_ms, now_ms, parse_instant_ms};

/// Stages of the default pipeline: (id, closed, won).
pub(crate) const DEAL_STAGES: &[(&str, bool, bool)] = &[
    ("appointmentscheduled", false, false),
    ("qualifiedtobuy", false, false),
    ("presentationscheduled", false, false),
    ("decisionmakerboughtin", false, false),
    ("contractsent", false, false),
    ("closedwon", true, true),
    ("closedlost", true, false),
];
pub(crate) const DEFAULT_PIPELINE: &str = "default";
/// HubSpot's association type id for deal → contact.
const DEAL_TO_CONTACT: u32 = 3;
const WRITABLE: &[&str] =
    &["dealname", "amount", "dealstage", "pipeline", "closedate", "deal_currency_code"];
const NUMERIC: &[&str] = &[
    "amount",
    "closedate",
    "createdate",
    "hs_lastmodifieddate",
    "hs_object_id",
    "num_associated_contacts",
];
const DEFAULT_DEAL_PROPERTIES: &[&str] = &[
    "amount",
    "closedate",
    "createdate",
    "dealname",
    "dealstage",
    "hs_lastmodifieddate",
    "hs_object_id",
    "pipeline",
];
const ASSOC_PAGE: usize = 500;
const ASSOC_BATCH_MAX: usize = 1000;

#[derive(Debug, Clone)]
pub(crate) struct Deal {
    id: u64,
    props: BTreeMap<String, String>,
    closedate_ms: Option<i64>,
    created_ms: i64,
    updated_ms: i64,
    archived_ms: Option<i64>,
}

#[derive(Debug, Default)]
pub(crate) struct DealStore {
    deals: BTreeMap<u64, Deal>,
    contacts: BTreeMap<u64, BTreeSet<u64>>,
    next_id: u64,
    last_ms: i64,
}

impl DealStore {
    /// A modification time that never goes back (HubSpot stamps in ms; ties are allowed).
    fn stamp(&mut self) -> i64 {
        self.last_ms = now_ms().max(self.last_ms);
        self.last_ms
    }

    fn value(&self, d: &Deal, name: &str) -> Option<String> {
        match name {
            "hs_object_id" => Some(d.id.to_string()),
            "createdate" => Some(iso_ms(d.created_ms)),
            "hs_lastmodifieddate" => Some(iso_ms(d.updated_ms)),
            "closedate" => d.closedate_ms.map(iso_ms),
            "num_associated_contacts" => {
                Some(self.contacts.get(&d.id).map_or(0, BTreeSet::len).to_string())
            }
            "hs_is_closed" | "hs_is_closed_won" => {
                let stage = d.props.get("dealstage")?;
                let (_, closed, won) = DEAL_STAGES.iter().find(|s| s.0 == stage)?;
                Some(if name == "hs_is_closed" { closed } else { won }.to_string())
            }
            _ => d.props.get(name).cloned(),
        }
    }

    /// Number-like properties compare as numbers (datetimes as epoch ms).
    fn key(&self, d: &Deal, name: &str) -> Option<Key> {
        let v = self.value(d, name)?;
        if NUMERIC.contains(&name) {
            parse_instant_ms(&v)
                .map(|n| Key::Num(n as f64))
                .or_else(|| v.parse().ok().map(Key::Num))
        } else {
            Some(Key::Text(v.to_lowercase()))
        }
    }

    fn render(&self, d: &Deal, props: &[String]) -> Value {
        let names: Vec<&str> = if props.is_empty() {
            DEFAULT_DEAL_PROPERTIES.to_vec()
        } else {
            props.iter().map(String::as_str).collect()
        };
        let mut p = serde_json::Map::new();
        for n in names.iter().chain(["createdate", "hs_lastmodifieddate", "hs_object_id"].iter()) {
            p.insert((*n).to_owned(), self.value(d, n).map_or(Value::Null, Value::String));
        }
        let mut v = json!({
            "id": d.id.to_string(),
            "properties": p,
            "createdAt": iso_ms(d.created_ms),
            "updatedAt": iso_ms(d.updated_ms),
            "archived": d.archived_ms.is_some(),
        });
        if let (Some(at), Some(o)) = (d.archived_ms, v.as_object_mut()) {
            o.insert("archivedAt".into(), json!(iso_ms(at)));
        }
        v
    }

    fn apply(&mut self, id: u64, props: &BTreeMap<String, String>) -> Result<(), String> {
        for (k, v) in props {
            if !WRITABLE.contains(&k.as_str()) {
                return Err(format!("{k} is not a writable deal property"));
            }
            if k == "dealstage" && !DEAL_STAGES.iter().any(|s| s.0 == v) {
                return Err(format!("{v} is not a valid dealstage of pipeline default"));
            }
            if k == "amount" && !v.is_empty() && v.parse::<f64>().is_err() {
                return Err(format!("{v} is not a valid number for amount"));
            }
            if k == "closedate" && !v.is_empty() && parse_instant_ms(v).is_none() {
                return Err(format!("{v} is not a valid datetime for closedate"));
            }
        }
        let now = self.stamp();
        let deal = self.deals.get_mut(&id).ok_or("deal not found")?;
        for (k, v) in props {
            if k == "closedate" {
                deal.closedate_ms = parse_instant_ms(v);
            } else if v.is_empty() {
                deal.props.remove(k);
            } else {
                deal.props.insert(k.clone(), v.clone());
            }
        }
        deal.updated_ms = now;
        Ok(())
    }

    pub(crate) fn create(&mut self, props: &BTreeMap<String, String>) -> Result<u64, String> {
        self.next_id += 1;
        let id = 9_000_000 + self.next_id;
        let now = self.stamp();
        let mut base = BTreeMap::new();
        base.insert("pipeline".to_owned(), DEFAULT_PIPELINE.to_owned());
        base.insert("dealstage".to_owned(), DEAL_STAGES[0].0.to_owned());
        self.deals.insert(
            id,
            Deal {
                id,
                props: base,
                closedate_ms: None,
                created_ms: now,
                updated_ms: now,
                archived_ms: None,
            },
        );
        if let Err(e) = self.apply(id, props) {
            self.deals.remove(&id);
            return Err(e);
        }
        Ok(id)
    }

    pub(crate) fn update(
        &mut self,
        id: u64,
        props: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        match self.deals.get(&id) {
            Some(d) if d.archived_ms.is_none() => self.apply(id, props),
            _ => Err("deal not found".into()),
        }
    }

    /// Add (`on`) or remove a contact; the deal's computed contact count moves its stamp.
    pub(crate) fn associate(&mut self, deal: u64, contact: u64, on: bool) -> Result<(), String> {
        if self.deals.get(&deal).is_none_or(|d| d.archived_ms.is_some()) {
            return Err("deal not found".into());
        }
        let set = self.contacts.entry(deal).or_default();
        let changed = if on { set.insert(contact) } else { set.remove(&contact) };
        if changed {
            let now = self.stamp();
            if let Some(d) = self.deals.get_mut(&deal) {
                d.updated_ms = now;
            }
        }
        Ok(())
    }

    pub(crate) fn archive(&mut self, id: u64) -> bool {
        let now = self.stamp();
        match self.deals.get_mut(&id) {
            Some(d) if d.archived_ms.is_none() => {
                d.archived_ms = Some(now);
                d.updated_ms = now;
                true
            }
            _ => false,
        }
    }

    fn live(&self, id: u64) -> Option<&Deal> {
        self.deals.get(&id).filter(|d| d.archived_ms.is_none())
    }
}

#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Key {
    Num(f64),
    Text(String),
}

fn pairs(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn props_param(pairs: &[(String, String)]) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == "properties")
        .flat_map(|(_, v)| v.split(',').map(str::to_owned))
        .filter(|s| !s.is_empty())
        .collect()
}

fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::validation("Invalid input JSON on line 1"))
}

fn inputs(body: &Value, max: usize) -> Result<Vec<(String, Option<String>)>, ApiError> {
    let list = body
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::validation("inputs is required"))?;
    if list.len() > max {
        return Err(ApiError::validation(format!(
            "Batch input limit is {max}, got {}",
            list.len()
        )));
    }
    list.iter()
        .map(|i| {
            let id = match i.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => return Err(ApiError::validation("each input needs an id")),
            };
            Ok((id, i.get("after").and_then(Value::as_str).map(str::to_owned)))
        })
        .collect()
}

fn batch(results: Vec<Value>, missing: Vec<String>, started: i64, what: &str) -> Response {
    let mut body = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": iso_ms(started),
        "completedAt": iso_ms(now_ms()),
    });
    let status = if missing.is_empty() { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    if !missing.is_empty()
        && let Some(o) = body.as_object_mut()
    {
        o.insert("numErrors".into(), json!(1));
        o.insert(
            "errors".into(),
            json!([{
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": format!("Could not get some {what} objects, they may be deleted or not exist."),
                "context": {"ids": missing},
                "errors": [],
            }]),
        );
    }
    (status, axum::Json(body)).into_response()
}

pub(crate) async fn list(
    State(inner): State<Arc<Inner>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = pairs(&raw);
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let limit: usize = get("limit")
        .map_or(Ok(10), str::parse)
        .map_err(|_| ApiError::validation("limit must be a number"))?;
    if limit == 0 || limit > 100 {
        return Err(ApiError::validation("limit must be between 1 and 100"));
    }
    let after: u64 = get("after")
        .map_or(Ok(0), str::parse)
        .map_err(|_| ApiError::validation("after must be a deal id"))?;
    let archived = get("archived") == Some("true");
    let props = props_param(&q);
    let store = inner.deal_store();
    let mut page: Vec<&Deal> = store
        .deals
        .range(after.saturating_add(1)..)
        .map(|(_, d)| d)
        .filter(|d| d.archived_ms.is_some() == archived)
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let mut body =
        json!({"results": page.iter().map(|d| store.render(d, &props)).collect::<Vec<_>>()});
    if more && let (Some(last), Some(o)) = (page.last(), body.as_object_mut()) {
        o.insert("paging".into(), json!({"next": {"after": last.id.to_string()}}));
    }
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

pub(crate) async fn batch_read(
    State(inner): State<Arc<Inner>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = now_ms();
    let body = body_json(&body)?;
    let ids = inputs(&body, 100)?;
    let props: Vec<String> = body
        .get("properties")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let store = inner.deal_store();
    let (mut results, mut missing) = (Vec::new(), Vec::new());
    for (id, _) in ids {
        match id.parse::<u64>().ok().and_then(|n| store.live(n)) {
            Some(d) => results.push(store.render(d, &props)),
            None => missing.push(id),
        }
    }
    Ok(batch(results, missing, started, "DEAL"))
}

pub(crate) async fn search(
    State(inner): State<Arc<Inner>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = body_json(&body)?;
    let limit = body.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
    if limit == 0 || limit > inner.opts.search_max_limit as usize {
        return Err(ApiError::validation(format!(
            "limit must be between 1 and {}",
            inner.opts.search_max_limit
        )));
    }
    let after: usize = match body.get("after") {
        None | Some(Value::Null) => 0,
        Some(Value::String(s)) => {
            s.parse().map_err(|_| ApiError::validation("after must be a number"))?
        }
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0) as usize,
        Some(_) => return Err(ApiError::validation("after must be a string")),
    };
    if (after + limit) as u64 > inner.opts.search_max_results {
        return Err(ApiError::validation(format!(
            "Paging through search results is limited to {} results",
            inner.opts.search_max_results
        )));
    }
    let store = inner.deal_store();
    let mut groups: Vec<Vec<(String, String, Key)>> = Vec::new();
    for g in body.get("filterGroups").and_then(Value::as_array).into_iter().flatten() {
        let mut fs = Vec::new();
        for f in g.get("filters").and_then(Value::as_array).into_iter().flatten() {
            let name = f.get("propertyName").and_then(Value::as_str).unwrap_or_default().to_owned();
            let op = f.get("operator").and_then(Value::as_str).unwrap_or_default().to_owned();
            let raw = match f.get("value") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => return Err(ApiError::validation(format!("filter on {name} needs a value"))),
            };
            if !["EQ", "NEQ", "GT", "GTE", "LT", "LTE"].contains(&op.as_str()) {
                return Err(ApiError::validation(format!("operator {op} is not supported here")));
            }
            let key = if NUMERIC.contains(&name.as_str()) {
                Key::Num(parse_instant_ms(&raw).ok_or_else(|| {
                    ApiError::validation(format!("{raw} is not a number for {name}"))
                })? as f64)
            } else {
                Key::Text(raw.to_lowercase())
            };
            fs.push((name, op, key));
        }
        groups.push(fs);
    }
    let sort = body.get("sorts").and_then(Value::as_array).and_then(|s| s.first()).map(|s| {
        (
            s.get("propertyName").and_then(Value::as_str).unwrap_or("hs_object_id").to_owned(),
            s.get("direction").and_then(Value::as_str) == Some("DESCENDING"),
        )
    });
    let matches = |d: &Deal| {
        groups.is_empty()
            || groups.iter().any(|g| {
                g.iter().all(|(name, op, want)| match store.key(d, name) {
                    None => op == "NEQ",
                    Some(have) => match op.as_str() {
                        "EQ" => have == *want,
                        "NEQ" => have != *want,
                        "GT" => have > *want,
                        "GTE" => have >= *want,
                        "LT" => have < *want,
                        _ => have <= *want,
                    },
                })
            })
    };
    let mut hits: Vec<&Deal> =
        store.deals.values().filter(|d| d.archived_ms.is_none() && matches(d)).collect();
    if let Some((prop, desc)) = &sort {
        hits.sort_by(|a, b| {
            let o = store
                .key(a, prop)
                .partial_cmp(&store.key(b, prop))
                .unwrap_or(std::cmp::Ordering::Equal);
            (if *desc { o.reverse() } else { o }).then(a.id.cmp(&b.id))
        });
    }
    let props: Vec<String> = body
        .get("properties")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let total = hits.len();
    let page: Vec<Value> =
        hits.iter().skip(after).take(limit).map(|d| store.render(d, &props)).collect();
    let mut out = json!({"total": total, "results": page});
    if after + limit < total
        && let Some(o) = out.as_object_mut()
    {
        o.insert("paging".into(), json!({"next": {"after": (after + limit).to_string()}}));
    }
    Ok((StatusCode::OK, axum::Json(out)).into_response())
}

pub(crate) async fn assoc_batch_read(
    State(inner): State<Arc<Inner>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = now_ms();
    let body = body_json(&body)?;
    let ids = inputs(&body, ASSOC_BATCH_MAX)?;
    let store = inner.deal_store();
    let (mut results, mut missing) = (Vec::new(), Vec::new());
    for (id, after) in ids {
        let Some(deal) = id.parse::<u64>().ok().and_then(|n| store.live(n)) else {
            missing.push(id);
            continue;
        };
        let from: u64 = after.and_then(|a| a.parse().ok()).unwrap_or(0);
        let all: Vec<u64> = store
            .contacts
            .get(&deal.id)
            .map(|s| s.range(from..).copied().collect())
            .unwrap_or_default();
        if all.is_empty() {
            continue;
        }
        let to: Vec<Value> = all
            .iter()
            .take(ASSOC_PAGE)
            .map(|c| json!({"toObjectId": c, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": DEAL_TO_CONTACT, "label": null}]}))
            .collect();
        let mut r = json!({"from": {"id": deal.id.to_string()}, "to": to});
        if let (Some(next), Some(o)) = (all.get(ASSOC_PAGE), r.as_object_mut()) {
            o.insert("paging".into(), json!({"next": {"after": next.to_string()}}));
        }
        results.push(r);
    }
    Ok(batch(results, missing, started, "DEAL"))
}
