//! Salesforce connector for the Lead and Contact objects (api-facts §2, §7).
//!
//! - `config.rs`: raw and validated settings.
//! - `client.rs`: HTTP, OAuth 2.0 client credentials, retries, error mapping, query paging.
//! - `cursor.rs`: the poll cursor (keyset on `(SystemModstamp, Id)` with an overlap re-scan).
//! - `wire.rs`: Salesforce JSON; `mapping.rs`: wire ⇄ domain.
//!
//! Polling runs `queryAll` SOQL ordered by `SystemModstamp, Id`, one query per synced object
//! (each keeps its own position in the cursor); creates are sObject Collections upserts of
//! Leads on a custom External ID field holding the ledger id, so a retried create never
//! duplicates; updates are sObject Collections updates by record id, of either object.
//!
//! What happens to records as a whole comes from Salesforce's own fields, never from absence:
//! `queryAll` returns rows in the recycle bin with `IsDeleted = true`, which become
//! [`RecordFate::MergedInto`] the `MasterRecordId` when it is set (a merge) and
//! [`RecordFate::Deleted`] otherwise, with no fields but the email (a dead record's values must
//! not compete with live ones; its email finds the person of a record deleted before leadsync
//! read it, who then gets a tombstone). A Lead with `IsConverted` and a `ConvertedContactId` becomes
//! [`RecordFate::ConvertedTo`] that Contact, its fields still mapped. `fetch` reads by id
//! through a Collections read, which (as in Salesforce) answers `null` for deleted records, and
//! asks `queryAll … WHERE Id IN (…)` for the ids it did not return.
//!
//! Closed-loop data (opportunities with their contact roles, campaign members) is read by a
//! separate poll with its own cursor, through [`crate::connectors::closed_loop::ClosedLoopSource`]
//! (`closed_loop.rs`, `wire_closed_loop.rs`).
//!
//! A batch error policy the caller relies on: a well-formed collections call answers 200 with a
//! result per record (per-record failures are `PushOutcome::Rejected` or `Retry`); a call that
//! fails as a whole (malformed body: 400, auth, limits) makes `push` return that error for the
//! whole batch. A mixed batch is sent as one call per kind (creates, then updates), and an
//! error from either fails the batch even if the other call went through; both calls are
//! idempotent, so sending the batch again is harmless.

mod client;
mod closed_loop;
#[cfg(test)]
mod closed_loop_tests;
mod config;
mod cursor;
mod erase;
#[cfg(test)]
mod fate_tests;
mod mapping;
#[cfg(test)]
mod tests;
mod wire;
mod wire_closed_loop;
mod wire_soap;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::Method;

pub use config::{SalesforceConfig, SalesforceConfigRaw};

use client::{Call, CallKind, Client, Target};
use wire::{CollectionRead, CollectionWrite, SaveResult};

use crate::connectors::contract_props::ContractProps;
use crate::connectors::{ApiCounters, Connector, ConnectorError, Cursor, FieldMap, Limits, Page};
#[cfg(doc)]
use crate::domain::RecordFate;
use crate::domain::{Change, ConnectorKind, PushOp, PushOutcome, PushRecord, RemoteId};

/// Most records in one sObject Collections write (more is `EXCEEDED_ID_LIMIT`).
const PUSH_BATCH_MAX: usize = 200;
/// Most ids one `fetch` accepts; Collections read allows 2000 per call.
const FETCH_BATCH_MAX: usize = 2000;
/// Ids per `GET /composite/sobjects` request. Fewer than the 2000 the endpoint allows, because
/// they travel in the URL: 400 ids of 18 characters (plus encoded commas) keep it near 8 KB,
/// well under Salesforce's 16 KB URI limit.
const FETCH_IDS_PER_GET: usize = 400;
/// Ids per `queryAll … WHERE Id IN (…)` for records the Collections read did not return.
const FETCH_IDS_PER_QUERY: usize = 200;

/// The Salesforce connector. All methods take `&self`; share it behind an `Arc`.
pub struct SalesforceConnector {
    // Boxed so that `AnyConnector` stays small whichever vendor it holds.
    inner: Box<Inner>,
}

struct Inner {
    client: Client,
    counters: Arc<ApiCounters>,
    /// The synced objects in polling order, with their mappings.
    objects: Vec<ObjectSpec>,
    external_id_field: String,
    poll_interval: Duration,
    overlap: Duration,
    page_size: u32,
    /// The lead contract's custom fields, read from every synced object.
    contract: ContractProps,
}

/// One synced sObject and its field mapping.
struct ObjectSpec {
    name: String,
    map: FieldMap,
}

impl SalesforceConnector {
    /// Build the connector; no network traffic happens until the first call.
    ///
    /// # Errors
    /// `Config` when the HTTP client cannot be built.
    pub fn new(cfg: SalesforceConfig) -> Result<SalesforceConnector, ConnectorError> {
        let counters = Arc::new(ApiCounters::default());
        let client = Client::new(&cfg, Arc::clone(&counters))?;
        Ok(SalesforceConnector {
            inner: Box::new(Inner {
                client,
                counters,
                objects: cfg
                    .objects
                    .into_iter()
                    .map(|(name, map)| ObjectSpec { name, map })
                    .collect(),
                external_id_field: cfg.external_id_field,
                poll_interval: cfg.poll_interval,
                overlap: cfg.overlap,
                page_size: cfg.page_size,
                contract: cfg.contract,
            }),
        })
    }

    /// Merge record `loser` into `master` (both Leads, or both Contacts) with the SOAP API's
    /// `merge()`, and return the surviving record's id. The merged record goes to the recycle
    /// bin with `MasterRecordId` = master, which the next poll reads as a merge.
    ///
    /// # Errors
    /// `Rejected` with Salesforce's status code when it refuses this merge (a deleted or
    /// converted record, another type); otherwise as any call (auth, rate limit, transient).
    pub async fn merge_records(
        &self,
        object_type: &str,
        master: &str,
        loser: &str,
    ) -> Result<String, ConnectorError> {
        let build = |session: &str| wire_soap::merge_request(session, object_type, master, loser);
        let body = self.inner.client.soap(&build).await?;
        match wire_soap::parse_merge_response(&body) {
            Ok(wire_soap::MergeResult::Merged(id)) => Ok(id),
            Ok(wire_soap::MergeResult::Refused(code)) => Err(ConnectorError::Rejected {
                code: if code.is_empty() { "merge_refused".into() } else { code },
                message: "salesforce refused the merge".into(),
            }),
            Err(why) => Err(ConnectorError::Transient(format!("salesforce merge: {why}"))),
        }
    }

    /// The mapping of the object creates go to (Lead), or of the first synced object when
    /// Lead is not synced. Per-object maps: [`SalesforceConnector::object_maps`].
    pub fn field_map(&self) -> &FieldMap {
        let this = &*self.inner;
        let spec = this.spec(wire::LEAD).or_else(|| this.objects.first());
        &spec.expect("config validation keeps at least one object").map
    }

    /// Every synced object type (`"Lead"`, `"Contact"`) with its field mapping, in polling
    /// order, so the engine can plan pushes per object type.
    pub fn object_maps(&self) -> Vec<(String, FieldMap)> {
        self.inner.objects.iter().map(|o| (o.name.clone(), o.map.clone())).collect()
    }

    /// The latest daily API usage Salesforce reported (`Sforce-Limit-Info`), as `(used, max)`.
    pub fn api_usage(&self) -> Option<(u64, u64)> {
        self.inner.client.api_usage()
    }

    /// The change an Outbound Message notification carries, when it holds every field this
    /// connector reads (and `SystemModstamp`); `None` when some are missing, so the caller
    /// fetches the record instead. `fields` are by API name, `None` for `xsi:nil`. Using it
    /// saves a read call per notification, and reads count against the org's daily allowance.
    pub fn change_from_notification(
        &self,
        object_type: &str,
        record_id: &str,
        fields: &std::collections::BTreeMap<String, Option<String>>,
        received_at: chrono::DateTime<Utc>,
    ) -> Option<Change> {
        let this = &*self.inner;
        let spec = this.spec(object_type)?;
        let has = |name: &str| fields.keys().any(|k| k.eq_ignore_ascii_case(name));
        // A notification is about a live record (deletes send none; a record deleted before
        // sending carries only its id and fails this check), so the delete and merge fields
        // are not needed; the conversion fields are.
        let complete = this
            .select_fields(spec)
            .iter()
            .filter(|f| {
                ![wire::ID_FIELD, wire::IS_DELETED_FIELD, wire::MASTER_RECORD_FIELD]
                    .iter()
                    .any(|n| f.eq_ignore_ascii_case(n))
            })
            .all(|f| has(f));
        if !complete {
            return None;
        }
        let mut rec = wire::Record::new();
        rec.insert(wire::ID_FIELD.into(), serde_json::Value::String(record_id.to_string()));
        for (k, v) in fields {
            let value = v.clone().map_or(serde_json::Value::Null, serde_json::Value::String);
            rec.insert(k.clone(), value);
        }
        // The values were read at the vendor some time before they reached us, no earlier
        // than their SystemModstamp: that is when this read "started", so a state from
        // before one of our pushes landed never looks newer than the push (a vendor clock
        // ahead of ours by more than a push's round trip would defeat this).
        let (mut change, _) = this.change_of(spec, &rec, received_at).ok()?;
        change.fetched_at = change.fetched_at.min(change.modified_at);
        Some(change)
    }
}

impl Inner {
    /// The synced object named `name` (case-insensitive, as Salesforce is).
    fn spec(&self, name: &str) -> Option<&ObjectSpec> {
        self.objects.iter().find(|o| o.name.eq_ignore_ascii_case(name))
    }

    /// Fields read on every query and fetch: the keyset pair, the fate fields, the external
    /// id, the mapping, the contract's properties (and `LastActivityDate` when asked).
    fn select_fields<'a>(&'a self, spec: &'a ObjectSpec) -> Vec<&'a str> {
        let mut out = vec![
            wire::ID_FIELD,
            wire::MODSTAMP_FIELD,
            wire::IS_DELETED_FIELD,
            wire::MASTER_RECORD_FIELD,
        ];
        if spec.name == wire::LEAD {
            out.extend([wire::IS_CONVERTED_FIELD, wire::CONVERTED_CONTACT_FIELD]);
        }
        out.push(self.external_id_field.as_str());
        let last_activity =
            self.contract.reads_last_activity().then_some(wire::LAST_ACTIVITY_FIELD);
        for p in spec.map.properties().chain(self.contract.properties()).chain(last_activity) {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(p)) {
                out.push(p);
            }
        }
        out
    }

    fn change_of(
        &self,
        spec: &ObjectSpec,
        rec: &wire::Record,
        fetched_at: chrono::DateTime<Utc>,
    ) -> Result<(Change, mapping::Position), ConnectorError> {
        let (map, ext) = (&spec.map, &self.external_id_field);
        mapping::record_to_change(map, &self.contract, &spec.name, ext, rec, fetched_at).map_err(
            |e| {
                tracing::warn!(connector = "salesforce", error = %e, "unusable record in response");
                ConnectorError::Transient(format!("salesforce {e}"))
            },
        )
    }

    /// One page of one object's keyset scan, from `state`; returns the changes not seen
    /// before, the next state and whether the page was full.
    async fn poll_object(
        &self,
        spec: &ObjectSpec,
        state: Option<&cursor::PollState>,
    ) -> Result<(Vec<Change>, Option<cursor::PollState>, bool), ConnectorError> {
        let start = cursor::start_of(state);
        let soql = cursor::poll_soql(&self.select_fields(spec), &spec.name, &start, self.page_size);
        // Before the call (and its retries): the state read may be as old as this, so a state
        // read while one of our pushes was in flight never looks newer than that push.
        let fetched_at = Utc::now();
        let records = self.client.query_all(&soql, self.page_size).await?;
        let mut changes = Vec::with_capacity(records.len());
        let mut positions = Vec::with_capacity(records.len());
        for rec in &records {
            let (change, pos) = self.change_of(spec, rec, fetched_at)?;
            if !state.is_some_and(|s| s.has_seen(&pos)) {
                changes.push(change);
            }
            positions.push(pos);
        }
        let full = records.len() >= self.page_size as usize;
        let next = cursor::advance(state, &positions, full, self.overlap);
        tracing::debug!(
            connector = "salesforce",
            object_type = %spec.name,
            rows = records.len(),
            emitted = changes.len(),
            full,
            "polled"
        );
        Ok((changes, next, full))
    }

    /// Current state of some records of one object: a Collections read, then `queryAll` for
    /// the ids it answered `null` for (deleted or merged away; unknown ids stay out).
    async fn fetch_object(
        &self,
        spec: &ObjectSpec,
        ids: &[&str],
    ) -> Result<Vec<Change>, ConnectorError> {
        let select = self.select_fields(spec);
        let fields = select.join(",");
        let target = format!("composite/sobjects/{}", spec.name);
        let mut out = Vec::with_capacity(ids.len());
        let mut missing: Vec<&str> = Vec::new();
        for chunk in ids.chunks(FETCH_IDS_PER_GET) {
            let mut call = Call::get(Target::Api(&target));
            call.query.push(("ids", chunk.join(",")));
            call.query.push(("fields", fields.clone()));
            let fetched_at = Utc::now();
            let body = self.client.call(&call).await?;
            let rows: CollectionRead = client::parse_json(&body, "records")?;
            for (id, row) in chunk.iter().zip(rows.iter().chain(std::iter::repeat(&None))) {
                match row {
                    Some(rec) => out.push(self.change_of(spec, rec, fetched_at)?.0),
                    None => missing.push(id),
                }
            }
        }
        // Ids are checked to be plain alphanumerics before they get here, so they are safe
        // inside SOQL quotes. 200 per query keeps the URL short.
        for chunk in missing.chunks(FETCH_IDS_PER_QUERY) {
            let list: Vec<String> = chunk.iter().map(|id| format!("'{id}'")).collect();
            let soql = format!(
                "SELECT {} FROM {} WHERE Id IN ({})",
                select.join(", "),
                spec.name,
                list.join(", ")
            );
            let fetched_at = Utc::now();
            let rows = self.client.query_all(&soql, self.page_size).await?;
            for rec in rows {
                out.push(self.change_of(spec, &rec, fetched_at)?.0);
            }
        }
        Ok(out)
    }

    /// Send one collections write and pair its results with the request, in order.
    async fn write(
        &self,
        target: &str,
        records: Vec<wire::Record>,
    ) -> Result<Vec<SaveResult>, ConnectorError> {
        let expected = records.len();
        let body = serde_json::to_vec(&CollectionWrite { all_or_none: false, records })
            .map_err(|e| ConnectorError::Config(format!("cannot encode request: {e}")))?;
        let call = Call {
            method: Method::PATCH,
            target: Target::Api(target),
            query: Vec::new(),
            headers: Vec::new(),
            body: Some(body),
            kind: CallKind::Write,
        };
        let results: Vec<SaveResult> =
            client::parse_json(&self.client.call(&call).await?, "save results")?;
        if results.len() != expected {
            // Without a one-to-one answer no record's fate is known. Both writes are
            // idempotent, so the caller may simply send the batch again.
            return Err(ConnectorError::Transient(format!(
                "salesforce answered {} results for {expected} records",
                results.len()
            )));
        }
        Ok(results)
    }
}

/// Whether `id` can name a record: 15 letters and digits, or 18 whose last three are the
/// case-checksum of the first 15. Salesforce fails a whole read with `MALFORMED_ID` for one
/// bad id, so such ids are left out before the call.
fn is_record_id(id: &str) -> bool {
    if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    match id.len() {
        15 => true,
        18 => with_checksum(&id[..15]).eq_ignore_ascii_case(id),
        _ => false,
    }
}

/// The 18-character form of a 15-character id: each 5-character chunk adds one character
/// naming which of its letters are upper case.
fn with_checksum(id15: &str) -> String {
    const CHARS: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let mut out = id15.to_string();
    for chunk in id15.as_bytes().chunks(5) {
        let mask = chunk
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_ascii_uppercase())
            .fold(0usize, |m, (bit, _)| m | (1 << bit));
        out.push(char::from(CHARS[mask]));
    }
    out
}

impl Connector for SalesforceConnector {
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Salesforce
    }

    fn limits(&self) -> Limits {
        Limits { push_batch_max: PUSH_BATCH_MAX, fetch_batch_max: FETCH_BATCH_MAX }
    }

    /// One page per synced object, each from its own position; the changes of all objects
    /// together, oldest first. Polls again at once when any object's page was full.
    async fn poll_changes(&self, cursor: &Cursor) -> Result<Page, ConnectorError> {
        let this = &*self.inner;
        let mut positions = cursor::decode_all(cursor)?;
        let mut changes = Vec::new();
        let mut any_full = false;
        for spec in &this.objects {
            let state = positions.objects.get(&spec.name);
            let (mut found, next, full) = this.poll_object(spec, state).await?;
            changes.append(&mut found);
            any_full |= full;
            if let Some(next) = next {
                positions.objects.insert(spec.name.clone(), next);
            }
        }
        // Stable: within one object the keyset order stays.
        changes.sort_by_key(|c| c.modified_at);
        Ok(Page {
            changes,
            next_cursor: cursor::encode_all(&positions),
            poll_again_after: if any_full { Duration::ZERO } else { this.poll_interval },
        })
    }

    /// Lead and Contact ids of synced objects; others (and ids not shaped like Salesforce ids)
    /// are left out, as unknown ids are.
    async fn fetch(&self, ids: &[RemoteId]) -> Result<Vec<Change>, ConnectorError> {
        let this = &*self.inner;
        let mut out = Vec::with_capacity(ids.len());
        for spec in &this.objects {
            // A malformed id would fail the whole request (MALFORMED_ID), so leave it out up
            // front; it could not name a record anyway.
            let wanted: Vec<&str> = ids
                .iter()
                .filter(|r| r.object_type.eq_ignore_ascii_case(&spec.name))
                .map(|r| r.id.as_str())
                .filter(|id| is_record_id(id))
                .collect();
            if !wanted.is_empty() {
                out.extend(this.fetch_object(spec, &wanted).await?);
            }
        }
        Ok(out)
    }

    async fn push(&self, batch: &[PushRecord]) -> Result<Vec<PushOutcome>, ConnectorError> {
        let this = &*self.inner;
        let mut outcomes: Vec<Option<PushOutcome>> = vec![None; batch.len()];
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        for (i, rec) in batch.iter().enumerate() {
            let unsupported = |t: &str, what: &str| PushOutcome::Rejected {
                outbox_id: rec.outbox_id,
                code: "unsupported_object".into(),
                message: format!("this connector {what}, not {t}"),
            };
            match &rec.op {
                PushOp::Create { object_type }
                    if object_type == wire::LEAD && this.spec(wire::LEAD).is_some() =>
                {
                    if rec.ledger_key.trim().is_empty() {
                        outcomes[i] = Some(PushOutcome::Rejected {
                            outbox_id: rec.outbox_id,
                            code: "missing_ledger_key".into(),
                            message: "a create needs a ledger key for the external id".into(),
                        });
                    } else {
                        creates.push(i);
                    }
                }
                PushOp::Create { object_type: t } => {
                    outcomes[i] = Some(unsupported(t, "creates Lead records only"));
                }
                PushOp::Update { remote } => match this.spec(&remote.object_type) {
                    Some(spec) => updates.push((i, spec)),
                    None => {
                        outcomes[i] =
                            Some(unsupported(&remote.object_type, "updates Lead and Contact"));
                    }
                },
            }
        }
        if let Some(lead) = this.spec(wire::LEAD) {
            let upsert_target =
                format!("composite/sobjects/{}/{}", lead.name, this.external_id_field);
            for chunk in creates.chunks(PUSH_BATCH_MAX) {
                let records = chunk
                    .iter()
                    .map(|&i| {
                        let mut r = mapping::create_record(
                            &lead.map,
                            &lead.name,
                            &this.external_id_field,
                            &batch[i],
                        );
                        mapping::add_stage_dates(&mut r, &this.contract, &batch[i]);
                        r
                    })
                    .collect();
                let results = this.write(&upsert_target, records).await?;
                for (&i, result) in chunk.iter().zip(results) {
                    outcomes[i] =
                        Some(mapping::save_outcome(batch[i].outbox_id, &lead.name, None, result));
                }
            }
        }
        // One collections update may mix object types: each record names its own.
        for chunk in updates.chunks(PUSH_BATCH_MAX) {
            let mut records = Vec::with_capacity(chunk.len());
            let mut ids = Vec::with_capacity(chunk.len());
            for &(i, spec) in chunk {
                if let PushOp::Update { remote } = &batch[i].op {
                    let mut r =
                        mapping::update_record(&spec.map, &spec.name, &remote.id, &batch[i]);
                    mapping::add_stage_dates(&mut r, &this.contract, &batch[i]);
                    records.push(r);
                    ids.push(remote.id.as_str());
                }
            }
            let results = this.write("composite/sobjects", records).await?;
            for ((&(i, spec), id), result) in chunk.iter().zip(ids).zip(results) {
                outcomes[i] =
                    Some(mapping::save_outcome(batch[i].outbox_id, &spec.name, Some(id), result));
            }
        }
        Ok(outcomes
            .into_iter()
            .zip(batch)
            .map(|(o, rec)| {
                o.unwrap_or(PushOutcome::Retry {
                    outbox_id: rec.outbox_id,
                    code: "not_sent".into(),
                })
            })
            .collect())
    }

    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        let this = &*self.inner;
        let first = this.objects.first().map_or(wire::LEAD, |o| o.name.as_str());
        let soql = format!("SELECT Id FROM {first} LIMIT 1");
        let mut call = Call::get(Target::Api("query"));
        call.query.push(("q", soql));
        let _: wire::QueryResponse = client::parse_json(&this.client.call(&call).await?, "query")?;
        // The lead contract's properties, on every synced object: a field the org lacks is
        // INVALID_FIELD here, at `leadsync check`, rather than at the first poll or push.
        let props: Vec<&str> = this
            .contract
            .properties()
            .chain(this.contract.stage_dates().map(|(_, p)| p.property.as_str()))
            .chain(this.contract.stage_reason())
            .collect();
        if !props.is_empty() {
            for spec in &this.objects {
                let soql = format!("SELECT Id, {} FROM {} LIMIT 1", props.join(", "), spec.name);
                let mut call = Call::get(Target::Api("query"));
                call.query.push(("q", soql));
                let _: wire::QueryResponse =
                    client::parse_json(&this.client.call(&call).await?, "query")?;
            }
        }
        Ok(())
    }

    fn counters(&self) -> Arc<ApiCounters> {
        Arc::clone(&self.inner.counters)
    }
}
