//! HubSpot contacts connector (CRM v3 objects API, private app token).
//!
//! - `config.rs`: settings, validated once; errors name the full key.
//! - `client.rs`: HTTP with bearer auth, pacing under the rate limits, retries, error classes.
//! - `poll.rs`: the incremental keyset scan over contacts search and its cursor.
//! - `wire.rs`: HubSpot's JSON (the only file that knows it).
//! - `mapping.rs`: wire records ⇄ domain changes and write properties.
//!
//! What happens to contacts as a whole comes from HubSpot's own word, never from absence:
//! `fetch` of a merged-away id (HubSpot answers with the survivor, a different id) gives a
//! `MergedInto` change plus the survivor's live change; an id `batch/read` does not return is
//! read again with `archived=true`, and an archived contact gives a `Deleted` change dated
//! `archivedAt`. Polls ask for `hs_merged_object_ids` and emit `MergedInto` for each listed id
//! with the survivor's change (repeatedly: the ledger dedupes), and now and then sweep the
//! archived list for `Deleted` changes (see `poll.rs`). Fate changes carry no fields, except a
//! `Deleted` one its email (who it was, so that a contact archived before leadsync read it still
//! leaves its person a tombstone). A `MergedInto` change is dated when the merge happened, from
//! the history of `hs_merged_object_ids` (`propertiesWithHistory`: every `batch/read` and
//! archived list asks for it; a search answer has none, so a poll page that lists merges reads
//! those survivors again by id), not by the survivor's `lastmodifieddate`, which any later write
//! moves on.
//!
//! Closed-loop data (deals with their contacts, form conversions as touches) is read by a
//! separate poll with its own cursor (`closed_loop.rs`, `wire_closed_loop.rs`), through
//! [`crate::connectors::closed_loop::ClosedLoopSource`].
//!
//! Writes: updates go to `batch/update` by id; creates go to `batch/upsert` keyed by email, so a
//! retried create never makes a second contact. `hs_email_optout` cannot be written through the
//! contacts API: an opt-out is sent to the communication preferences API as
//! "unsubscribe from all" for the person's email after the property write (batched, up to 100
//! addresses per `statuses/batch/unsubscribe-all` call), and an opt-in is never sent (consent
//! only tightens).

mod client;
mod closed_loop;
#[cfg(test)]
mod closed_loop_tests;
pub mod config;
mod erase;
#[cfg(test)]
mod fate_tests;
mod mapping;
mod poll;
mod wire;
mod wire_closed_loop;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;

use crate::connectors::{ApiCounters, Connector, ConnectorError, Cursor, FieldMap, Limits, Page};
use crate::domain::{Change, ConnectorKind, PushOp, PushOutcome, PushRecord, RecordFate, RemoteId};

pub use config::{HubspotConfig, HubspotConfigRaw};
pub use mapping::OBJECT_TYPE;

/// Most inputs a HubSpot batch endpoint accepts.
const BATCH_MAX: usize = 100;
/// Most addresses per `statuses/batch/unsubscribe-all` call. HubSpot's reference for that
/// endpoint names no cap; 100 is an assumption, the cap of the contacts batch endpoints.
const UNSUBSCRIBE_MAX: usize = 100;
/// Archived contacts per list page (the list endpoint's maximum).
const ARCHIVED_PAGE: u32 = 100;

/// The HubSpot contacts connector. Clones share one client and one pacing state, so make one
/// per token and clone it for the poller and the pusher.
#[derive(Clone)]
pub struct HubspotConnector {
    // Behind an Arc so clones share pacing and so `AnyConnector` stays small.
    inner: Arc<Inner>,
}

struct Inner {
    cfg: HubspotConfig,
    client: client::Client,
    read_props: Vec<String>,
}

impl HubspotConnector {
    /// Build the connector (no network IO; see [`Connector::healthcheck`]).
    ///
    /// # Errors
    /// `Config` when the token cannot travel in a header or the HTTP client cannot start.
    pub fn new(cfg: HubspotConfig) -> Result<HubspotConnector, ConnectorError> {
        let client = client::Client::new(&cfg, Arc::new(ApiCounters::default()))?;
        let read_props = mapping::read_properties(&cfg.map, &cfg.contract);
        Ok(HubspotConnector { inner: Arc::new(Inner { cfg, client, read_props }) })
    }

    /// The field mapping this connector reads and writes with.
    pub fn field_map(&self) -> &FieldMap {
        &self.inner.cfg.map
    }

    /// Merge contact `loser` into `primary` (`POST /crm/v3/objects/contacts/merge`) and return
    /// the surviving contact's id (HubSpot may give the result a new id).
    ///
    /// The call is retried inside the client on transient failures, and a retry whose first
    /// try went through is refused (the loser now resolves to the primary: "cannot merge a
    /// contact with itself"). So a refusal is checked by reading the loser: merged into
    /// `primary` already means done.
    ///
    /// # Errors
    /// The connector's usual classes: `Rejected` (4xx: unknown id, validation) is final,
    /// `Transient`/`RateLimited` may pass.
    pub async fn merge_contacts(
        &self,
        primary: &str,
        loser: &str,
    ) -> Result<String, ConnectorError> {
        let req = wire::MergeRequest {
            primary_object_id: primary.to_string(),
            object_id_to_merge: loser.to_string(),
        };
        match self.inner.client.merge(&req).await {
            Ok(survivor) => Ok(survivor.id),
            Err(refused @ ConnectorError::Rejected { .. }) => {
                let id = RemoteId { object_type: OBJECT_TYPE.into(), id: loser.to_string() };
                let already = self.fetch(std::slice::from_ref(&id)).await.is_ok_and(|changes| {
                    changes.iter().any(|c| {
                        c.remote.id == loser
                            && c.fate == RecordFate::MergedInto { survivor: primary.to_string() }
                    })
                });
                if already { Ok(primary.to_string()) } else { Err(refused) }
            }
            Err(e) => Err(e),
        }
    }
}

type WriteResult<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<(usize, PushOutcome)>, ConnectorError>> + Send + 'a>>;

/// A record prepared for a property write.
struct Prepared {
    /// Position in the pushed batch.
    idx: usize,
    outbox_id: i64,
    /// Contact id (update) or email address (upsert).
    key: String,
    properties: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Update,
    Upsert,
}

impl HubspotConnector {
    /// Write one group with one batch call. A whole-batch `VALIDATION_ERROR` or `CONFLICT`
    /// (HubSpot fails the batch for one bad record, e.g. an email another contact holds) is
    /// bisected down to single records, so only the bad record is rejected; other whole-call
    /// rejections reject every record of the group; retryable and auth errors fail the whole
    /// push.
    fn write_group<'a>(&'a self, kind: WriteKind, group: &'a [Prepared]) -> WriteResult<'a> {
        Box::pin(async move {
            let res = match kind {
                WriteKind::Update => {
                    let req = wire::BatchUpdateRequest {
                        inputs: group
                            .iter()
                            .map(|p| wire::UpdateInput {
                                id: p.key.clone(),
                                properties: p.properties.clone(),
                            })
                            .collect(),
                    };
                    self.inner.client.batch_update(&req).await
                }
                WriteKind::Upsert => {
                    let req = wire::BatchUpsertRequest {
                        inputs: group
                            .iter()
                            .map(|p| wire::UpsertInput {
                                id: p.key.clone(),
                                id_property: wire::EMAIL,
                                properties: p.properties.clone(),
                            })
                            .collect(),
                    };
                    self.inner.client.batch_upsert(&req).await
                }
            };
            match res {
                Ok((status, body)) => Ok(match kind {
                    WriteKind::Update => update_outcomes(group, status, &body),
                    WriteKind::Upsert => upsert_outcomes(group, &body),
                }),
                Err(ConnectorError::Rejected { code, .. })
                    if refused_for_one_record(&code) && group.len() > 1 =>
                {
                    tracing::debug!(records = group.len(), %code, "hubspot batch refused; bisecting");
                    let (left, right) = group.split_at(group.len() / 2);
                    let mut out = self.write_group(kind, left).await?;
                    out.extend(self.write_group(kind, right).await?);
                    Ok(out)
                }
                Err(ConnectorError::Rejected { code, message }) => Ok(group
                    .iter()
                    .map(|p| {
                        let outcome = PushOutcome::Rejected {
                            outbox_id: p.outbox_id,
                            code: code.clone(),
                            message: message.clone(),
                        };
                        (p.idx, outcome)
                    })
                    .collect()),
                Err(e) => Err(e),
            }
        })
    }
}

/// Whole-batch rejections that one record of the batch can cause: worth bisecting.
fn refused_for_one_record(code: &str) -> bool {
    matches!(code, "VALIDATION_ERROR" | "CONFLICT")
}

/// A record whose accepted write also asks to unsubscribe its email address.
struct OptOut {
    idx: usize,
    outbox_id: i64,
    email: String,
}

/// What happened to one address of a batch unsubscribe.
enum Unsubscribed {
    /// Unsubscribed: the record keeps the outcome of its property write.
    Yes,
    Rejected {
        code: String,
        message: String,
    },
    Retry {
        code: String,
    },
}

impl HubspotConnector {
    /// Unsubscribe one chunk of distinct addresses with one batch call and give every record
    /// of the chunk its outcome (only changed ones are returned; unsubscribed records keep
    /// their write's `Accepted`). A whole-call `VALIDATION_ERROR` is bisected like a property
    /// write, so one malformed address does not reject a hundred people; a retryable failure
    /// asks to retry the chunk's records; auth errors fail the push.
    fn unsubscribe_group<'a>(&'a self, chunk: &'a [Vec<&'a OptOut>]) -> WriteResult<'a> {
        Box::pin(async move {
            let req = wire::BatchEmailsRequest {
                inputs: chunk.iter().filter_map(|g| g.first().map(|o| o.email.clone())).collect(),
            };
            let per_address: Vec<Unsubscribed> =
                match self.inner.client.batch_unsubscribe_all(&req).await {
                    Ok((status, body)) => unsubscribe_outcomes(&req.inputs, status, &body),
                    Err(ConnectorError::Rejected { code, .. })
                        if code == "VALIDATION_ERROR" && chunk.len() > 1 =>
                    {
                        tracing::debug!(
                            addresses = chunk.len(),
                            "hubspot batch unsubscribe refused; bisecting"
                        );
                        let (left, right) = chunk.split_at(chunk.len() / 2);
                        let mut out = self.unsubscribe_group(left).await?;
                        out.extend(self.unsubscribe_group(right).await?);
                        return Ok(out);
                    }
                    Err(ConnectorError::Rejected { code, message }) => chunk
                        .iter()
                        .map(|_| Unsubscribed::Rejected {
                            code: code.clone(),
                            message: message.clone(),
                        })
                        .collect(),
                    Err(e) if e.is_retryable() => {
                        chunk.iter().map(|_| Unsubscribed::Retry { code: e.code() }).collect()
                    }
                    Err(e) => return Err(e),
                };
            let mut out = Vec::new();
            for (group, result) in chunk.iter().zip(per_address) {
                for o in group {
                    let outcome = match &result {
                        Unsubscribed::Yes => continue,
                        Unsubscribed::Rejected { code, message } => PushOutcome::Rejected {
                            outbox_id: o.outbox_id,
                            code: code.clone(),
                            message: message.clone(),
                        },
                        Unsubscribed::Retry { code } => {
                            PushOutcome::Retry { outbox_id: o.outbox_id, code: code.clone() }
                        }
                    };
                    out.push((o.idx, outcome));
                }
            }
            Ok(out)
        })
    }
}

/// Group opt-outs by address (case-insensitively: HubSpot keys subscription state by the
/// lower-cased address) and cut the distinct addresses into chunks of [`UNSUBSCRIBE_MAX`].
/// Records sharing an address share its outcome.
fn email_chunks(opt_outs: &[OptOut]) -> Vec<Vec<Vec<&OptOut>>> {
    let mut groups: Vec<Vec<&OptOut>> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for o in opt_outs {
        let key = mapping::email_key(&o.email);
        match at.get(&key) {
            Some(&i) => groups[i].push(o),
            None => {
                at.insert(key, groups.len());
                groups.push(vec![o]);
            }
        }
    }
    let mut chunks = Vec::new();
    let mut rest = groups.into_iter().peekable();
    while rest.peek().is_some() {
        chunks.push(rest.by_ref().take(UNSUBSCRIBE_MAX).collect());
    }
    chunks
}

/// Batch unsubscribe results, matched by address case-insensitively (never by order), one per
/// input. An error naming the address (anywhere in its `context`) rejects it. On a 200 every
/// other input succeeded, even when results are left out; on a 207 an input neither listed in
/// the results nor named by an error is unconfirmed and retried (unsubscribing is idempotent).
fn unsubscribe_outcomes(
    inputs: &[String],
    status: StatusCode,
    body: &wire::UnsubscribeBatchResponse,
) -> Vec<Unsubscribed> {
    let ok: HashSet<String> = body
        .results
        .iter()
        .filter_map(|r| r.subscriber_id_string.as_deref())
        .map(mapping::email_key)
        .collect();
    let mut failed: HashMap<String, &wire::StandardError> = HashMap::new();
    for e in &body.errors {
        for v in e.context_values() {
            failed.entry(mapping::email_key(&v)).or_insert(e);
        }
    }
    inputs
        .iter()
        .map(|email| {
            let key = mapping::email_key(email);
            if let Some(e) = failed.get(&key) {
                Unsubscribed::Rejected {
                    code: e.category.clone().unwrap_or_else(|| "http_207".into()),
                    message: wire::safe_description(
                        e.category.as_deref(),
                        e.sub_category.as_deref(),
                        e.message.as_deref(),
                        &e.errors,
                    ),
                }
            } else if ok.contains(&key) || status != StatusCode::MULTI_STATUS {
                Unsubscribed::Yes
            } else {
                Unsubscribed::Retry { code: "unconfirmed".into() }
            }
        })
        .collect()
}

fn accepted(p: &Prepared, id: &str, created: bool) -> (usize, PushOutcome) {
    let remote = RemoteId { object_type: OBJECT_TYPE.into(), id: id.to_string() };
    (p.idx, PushOutcome::Accepted { outbox_id: p.outbox_id, remote, created })
}

fn rejected_by(p: &Prepared, e: &wire::StandardError) -> (usize, PushOutcome) {
    let code = e.category.clone().unwrap_or_else(|| "http_207".into());
    let message = wire::safe_description(
        e.category.as_deref(),
        e.sub_category.as_deref(),
        e.message.as_deref(),
        &e.errors,
    );
    (p.idx, PushOutcome::Rejected { outbox_id: p.outbox_id, code, message })
}

fn unconfirmed(p: &Prepared) -> (usize, PushOutcome) {
    (p.idx, PushOutcome::Retry { outbox_id: p.outbox_id, code: "unconfirmed".into() })
}

/// Batch update results, matched by id (never by order). On a 200 every input succeeded, so an
/// input whose id is missing from the results (merged away: HubSpot answers with the surviving
/// id) is still accepted; on a 207 it is unconfirmed and retried.
fn update_outcomes(
    group: &[Prepared],
    status: StatusCode,
    body: &wire::BatchResponse,
) -> Vec<(usize, PushOutcome)> {
    let ok: HashSet<&str> = body.results.iter().map(|c| c.id.as_str()).collect();
    let mut failed: HashMap<String, &wire::StandardError> = HashMap::new();
    for e in &body.errors {
        for id in e.context_ids() {
            failed.entry(id).or_insert(e);
        }
    }
    group
        .iter()
        .map(|p| {
            if ok.contains(p.key.as_str()) {
                accepted(p, &p.key, false)
            } else if let Some(e) = failed.get(&p.key) {
                rejected_by(p, e)
            } else if status == StatusCode::MULTI_STATUS {
                unconfirmed(p)
            } else {
                accepted(p, &p.key, false)
            }
        })
        .collect()
}

/// Batch upsert results, matched by email case-insensitively (never by order). An input with
/// no matching result is retried even on a 200, because its contact id is unknown; the upsert
/// is idempotent.
fn upsert_outcomes(group: &[Prepared], body: &wire::BatchResponse) -> Vec<(usize, PushOutcome)> {
    let mut ok: HashMap<String, (&str, bool)> = HashMap::new();
    for c in &body.results {
        if let Some(Some(email)) = c.properties.get(wire::EMAIL) {
            ok.insert(mapping::email_key(email), (c.id.as_str(), c.new.unwrap_or(false)));
        }
    }
    let mut failed: HashMap<String, &wire::StandardError> = HashMap::new();
    for e in &body.errors {
        for id in e.context_ids() {
            failed.entry(mapping::email_key(&id)).or_insert(e);
        }
    }
    group
        .iter()
        .map(|p| {
            let key = mapping::email_key(&p.key);
            if let Some((id, created)) = ok.get(&key) {
                accepted(p, id, *created)
            } else if let Some(e) = failed.get(&key) {
                rejected_by(p, e)
            } else {
                unconfirmed(p)
            }
        })
        .collect()
}

/// Split creates into rounds in which every email appears once: HubSpot refuses a batch that
/// names one id twice, and two creates for one address must not race inside one call.
fn unique_rounds(creates: Vec<Prepared>) -> Vec<Vec<Prepared>> {
    let mut rounds: Vec<(HashSet<String>, Vec<Prepared>)> = Vec::new();
    for p in creates {
        let key = mapping::email_key(&p.key);
        match rounds.iter_mut().find(|(keys, _)| !keys.contains(&key)) {
            Some((keys, items)) => {
                keys.insert(key);
                items.push(p);
            }
            None => rounds.push((HashSet::from([key]), vec![p])),
        }
    }
    rounds.into_iter().map(|(_, items)| items).collect()
}

impl HubspotConnector {
    /// `batch/read` of these ids (live, or with `archived` archived ones); a whole-call 404
    /// (every id unknown) is an empty answer.
    async fn read_batch(
        &self,
        ids: &[&str],
        archived: bool,
    ) -> Result<Vec<wire::Contact>, ConnectorError> {
        let req = wire::BatchReadRequest {
            inputs: ids.iter().map(|id| wire::IdInput { id: (*id).to_string() }).collect(),
            properties: self.inner.read_props.clone(),
            properties_with_history: vec![wire::MERGED_IDS.to_string()],
        };
        match self.inner.client.batch_read(&req, archived).await {
            Ok(r) => Ok(r.results),
            Err(ConnectorError::Rejected { code, .. }) if code == "OBJECT_NOT_FOUND" => {
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// The page's emitted contacts that list merged ids, read again by id for the history of
    /// `hs_merged_object_ids` (search answers carry no history): when each merge happened.
    /// The survivor's `lastmodifieddate` is no date for it, since any later write to the
    /// survivor, leadsync's own pushes too, moves it on (convergence seed 7486). One batch
    /// read per page that has merges; none otherwise.
    async fn merge_dates(
        &self,
        results: &[wire::Contact],
        emit: &[bool],
    ) -> Result<Vec<wire::Contact>, ConnectorError> {
        let ids: Vec<&str> = results
            .iter()
            .zip(emit)
            .filter(|(c, emit)| **emit && !mapping::merged_ids(c).is_empty())
            .map(|(c, _)| c.id.as_str())
            .collect();
        let mut out = Vec::new();
        for chunk in ids.chunks(BATCH_MAX) {
            out.extend(self.read_batch(chunk, false).await?);
        }
        Ok(out)
    }

    /// One page of the archived-contacts sweep: a `Deleted` change per archived contact.
    async fn sweep_page(
        &self,
        mut pc: poll::PollCursor,
        after: Option<&str>,
    ) -> Result<Page, ConnectorError> {
        // Before the call (and its retries): the state read may be as old as this.
        let fetched_at = Utc::now();
        let map = &self.inner.cfg.map;
        let mut props = mapping::who_it_was_properties(map);
        props.extend([wire::LAST_MODIFIED, wire::MERGED_IDS]);
        let resp = self.inner.client.list_archived(ARCHIVED_PAGE, after, &props).await?;
        let changes: Vec<Change> = resp
            .results
            .iter()
            .flat_map(|c| mapping::archived_changes(c, map, fetched_at))
            .collect();
        let next = resp.next_after().map(str::to_string);
        tracing::debug!(
            archived = changes.len(),
            done = next.is_none(),
            "hubspot archived sweep page"
        );
        let done = next.is_none();
        pc.swept(next);
        // A sweep ends the pass that started it (see `poll_changes`): straight on to its next
        // page, or, after the last one, wait as after any caught-up pass. So "read to the
        // end" includes the archived list whenever a sweep was due.
        let poll_again_after = if done { self.inner.cfg.poll_interval } else { Duration::ZERO };
        Ok(Page { changes, next_cursor: pc.to_cursor()?, poll_again_after })
    }
}

impl Connector for HubspotConnector {
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Hubspot
    }

    fn limits(&self) -> Limits {
        Limits { push_batch_max: BATCH_MAX, fetch_batch_max: BATCH_MAX }
    }

    /// One page of the keyset scan described in `poll.rs`, or, while a sweep of the archived
    /// list is due, one page of that list instead.
    async fn poll_changes(&self, cursor: &Cursor) -> Result<Page, ConnectorError> {
        let pc = poll::PollCursor::parse(cursor)?;
        if let Some(sweep) = pc.sweep.clone()
            && self.inner.cfg.archived_sweep_every > 0
        {
            return self.sweep_page(pc, sweep.after.as_deref()).await;
        }
        let req = pc.query(self.inner.cfg.page_size, self.inner.read_props.clone());
        // The keyset scan reasons about our clock before the request, and the changes carry
        // it too: the state read may be as old as this, so a state read while one of our
        // pushes was in flight never looks newer than that push (the reconciler reads such a
        // record again when it shows another value of a pushed field).
        let requested_at = Utc::now();
        let resp = self.inner.client.search(&req).await?;
        let fetched_at = requested_at;
        let obs: Vec<poll::Obs> = resp
            .results
            .iter()
            .map(|c| poll::Obs {
                id: c.id.clone(),
                ts_ms: mapping::modified_at(c).map(|t| t.timestamp_millis()),
            })
            .collect();
        let full = resp.results.len() >= self.inner.cfg.page_size as usize
            || (resp.has_more() && !resp.results.is_empty());
        let overlap_ms = i64::try_from(self.inner.cfg.overlap.as_millis()).unwrap_or(i64::MAX);
        let mut step = pc.step(&obs, full, requested_at.timestamp_millis(), overlap_ms);
        let merge_dates = self.merge_dates(&resp.results, &step.emit).await?;
        let mut changes = Vec::new();
        for (c, emit) in resp.results.iter().zip(&step.emit) {
            if !emit {
                if mapping::modified_at(c).is_none() {
                    tracing::warn!(contact_id = %c.id, "hubspot contact without lastmodifieddate skipped");
                }
                continue;
            }
            if let Some(ch) =
                mapping::to_change(c, &self.inner.cfg.map, &self.inner.cfg.contract, fetched_at)
            {
                // Merged-away ids first: the survivor's own state then comes last.
                let dated_by = merge_dates.iter().find(|d| d.id == c.id);
                changes.extend(mapping::merged_away(c, dated_by, fetched_at));
                changes.push(ch);
            }
        }
        // A sweep that falls due now is read straight after this page, as the end of the
        // same pass.
        let mut sweep_due = false;
        if step.caught_up {
            step.next.count_caught_up(self.inner.cfg.archived_sweep_every);
            sweep_due = step.next.sweep.is_some();
        }
        tracing::debug!(
            results = resp.results.len(),
            emitted = changes.len(),
            caught_up = step.caught_up,
            "hubspot poll page"
        );
        Ok(Page {
            changes,
            next_cursor: step.next.to_cursor()?,
            poll_again_after: if step.caught_up && !sweep_due {
                self.inner.cfg.poll_interval
            } else {
                Duration::ZERO
            },
        })
    }

    /// Batch read by id, 100 per call; see the module docs for merged and archived ids. Ids
    /// HubSpot does not know, live or archived, are left out.
    async fn fetch(&self, ids: &[RemoteId]) -> Result<Vec<Change>, ConnectorError> {
        let wanted: Vec<&str> =
            ids.iter().filter(|r| r.object_type == OBJECT_TYPE).map(|r| r.id.as_str()).collect();
        let mut out = Vec::new();
        for chunk in wanted.chunks(BATCH_MAX) {
            // Before the reads: the states may be as old as this.
            let fetched_at = Utc::now();
            let live = self.read_batch(chunk, false).await?;
            let mut answered: HashSet<&str> = HashSet::new();
            for c in &live {
                answered.insert(c.id.as_str());
            }
            // A merged-away id comes back as its survivor, whose id differs; the survivor
            // lists it in `hs_merged_object_ids`.
            let mut survivor_of: HashMap<String, &wire::Contact> = HashMap::new();
            for c in &live {
                for m in mapping::merged_ids(c) {
                    survivor_of.entry(m).or_insert(c);
                }
            }
            let mut missing: Vec<&str> = Vec::new();
            for id in chunk {
                if answered.contains(id) {
                    continue;
                }
                match survivor_of.get(*id) {
                    Some(s) => {
                        let at = mapping::merged_at(s, id)
                            .or_else(|| mapping::modified_at(s))
                            .unwrap_or(fetched_at);
                        let fate = RecordFate::MergedInto { survivor: s.id.clone() };
                        out.push(mapping::fate_change(id, fate, at, fetched_at));
                    }
                    None => missing.push(id),
                }
            }
            let mut emitted: HashSet<&str> = HashSet::new();
            for c in &live {
                // Two asked ids can resolve to one survivor: one change for it.
                if emitted.insert(c.id.as_str())
                    && let Some(ch) = mapping::to_change(
                        c,
                        &self.inner.cfg.map,
                        &self.inner.cfg.contract,
                        fetched_at,
                    )
                {
                    out.push(ch);
                }
            }
            if !missing.is_empty() {
                let archived = self.read_batch(&missing, true).await?;
                let map = &self.inner.cfg.map;
                out.extend(
                    archived.iter().flat_map(|c| mapping::archived_changes(c, map, fetched_at)),
                );
            }
        }
        Ok(out)
    }

    /// See the module docs for the write paths. Outcomes come back in input order. When a
    /// later call of the same push fails as a whole with a retryable or auth error, the push
    /// returns that error even if an earlier call was accepted: every write here is idempotent
    /// (update by id, upsert by email, unsubscribe), so pushing the batch again is safe.
    async fn push(&self, batch: &[PushRecord]) -> Result<Vec<PushOutcome>, ConnectorError> {
        let mut outcomes: Vec<Option<PushOutcome>> = vec![None; batch.len()];
        let mut updates = Vec::new();
        let mut creates = Vec::new();
        for (idx, rec) in batch.iter().enumerate() {
            let mut properties = mapping::write_properties(&self.inner.cfg.map, &rec.fields);
            properties.extend(mapping::stage_date_properties(&self.inner.cfg.contract, rec));
            properties.extend(mapping::contract_write_properties(&self.inner.cfg.contract, rec));
            match &rec.op {
                PushOp::Update { remote } if remote.object_type != OBJECT_TYPE => {
                    outcomes[idx] = Some(PushOutcome::Rejected {
                        outbox_id: rec.outbox_id,
                        code: "wrong_object_type".into(),
                        message: format!("hubspot connector writes {OBJECT_TYPE} records only"),
                    });
                }
                PushOp::Update { remote } if properties.is_empty() => {
                    // Nothing the contacts API may write (an opt-out alone, say).
                    outcomes[idx] = Some(PushOutcome::Accepted {
                        outbox_id: rec.outbox_id,
                        remote: remote.clone(),
                        created: false,
                    });
                }
                PushOp::Update { remote } => updates.push(Prepared {
                    idx,
                    outbox_id: rec.outbox_id,
                    key: remote.id.clone(),
                    properties,
                }),
                PushOp::Create { .. } => match mapping::email_of(rec) {
                    Some(email) => creates.push(Prepared {
                        idx,
                        outbox_id: rec.outbox_id,
                        key: email,
                        properties,
                    }),
                    None => {
                        outcomes[idx] = Some(PushOutcome::Rejected {
                            outbox_id: rec.outbox_id,
                            code: "missing_email".into(),
                            message: "a hubspot contact is created by email upsert; no email"
                                .into(),
                        });
                    }
                },
            }
        }
        for chunk in updates.chunks(BATCH_MAX) {
            for (idx, o) in self.write_group(WriteKind::Update, chunk).await? {
                outcomes[idx] = Some(o);
            }
        }
        for round in unique_rounds(creates) {
            for chunk in round.chunks(BATCH_MAX) {
                for (idx, o) in self.write_group(WriteKind::Upsert, chunk).await? {
                    outcomes[idx] = Some(o);
                }
            }
        }

        // Opt-outs after the property write: only for records the write accepted, collected
        // so that a bulk sync spends one call per hundred addresses, not one per person.
        let mut opt_outs: Vec<OptOut> = Vec::new();
        for (idx, rec) in batch.iter().enumerate() {
            let Some(PushOutcome::Accepted { .. }) = &outcomes[idx] else { continue };
            if !mapping::wants_opt_out(&rec.fields) {
                continue;
            }
            match mapping::email_of(rec) {
                Some(email) => opt_outs.push(OptOut { idx, outbox_id: rec.outbox_id, email }),
                None => {
                    outcomes[idx] = Some(PushOutcome::Rejected {
                        outbox_id: rec.outbox_id,
                        code: "missing_email".into(),
                        message: "an opt-out is recorded per email address; no email".into(),
                    });
                }
            }
        }
        for chunk in email_chunks(&opt_outs) {
            for (idx, o) in self.unsubscribe_group(&chunk).await? {
                outcomes[idx] = Some(o);
            }
        }

        Ok(outcomes
            .into_iter()
            .zip(batch)
            .map(|(o, rec)| {
                // Every path above assigns an outcome; this keeps the contract if one is missed.
                o.unwrap_or(PushOutcome::Retry {
                    outbox_id: rec.outbox_id,
                    code: "unconfirmed".into(),
                })
            })
            .collect())
    }

    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        self.inner.client.healthcheck().await
    }

    fn counters(&self) -> Arc<ApiCounters> {
        self.inner.client.counters()
    }
}
