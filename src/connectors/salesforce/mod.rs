//! Salesforce connector for the Lead object (api-facts §2, §7).
//!
//! - `config.rs`: raw and validated settings.
//! - `client.rs`: HTTP, OAuth 2.0 client credentials, retries, error mapping, query paging.
//! - `cursor.rs`: the poll cursor (keyset on `(SystemModstamp, Id)` with an overlap re-scan).
//! - `wire.rs`: Salesforce JSON; `mapping.rs`: wire ⇄ domain.
//!
//! Polling runs SOQL ordered by `SystemModstamp, Id`; creates are sObject Collections upserts
//! on a custom External ID field holding the ledger id, so a retried create never duplicates;
//! updates are sObject Collections updates by record id.
//!
//! A batch error policy the caller relies on: a well-formed collections call answers 200 with a
//! result per record (per-record failures are `PushOutcome::Rejected` or `Retry`); a call that
//! fails as a whole (malformed body: 400, auth, limits) makes `push` return that error for the
//! whole batch. A mixed batch is sent as one call per kind (creates, then updates), and an
//! error from either fails the batch even if the other call went through; both calls are
//! idempotent, so sending the batch again is harmless.

mod client;
mod config;
mod cursor;
mod mapping;
#[cfg(test)]
mod tests;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::Method;

pub use config::{SalesforceConfig, SalesforceConfigRaw};

use client::{Call, CallKind, Client, Target};
use wire::{CollectionRead, CollectionWrite, SaveResult};

use crate::connectors::{ApiCounters, Connector, ConnectorError, Cursor, FieldMap, Limits, Page};
use crate::domain::{Change, ConnectorKind, PushOp, PushOutcome, PushRecord, RemoteId};

/// Most records in one sObject Collections write (more is `EXCEEDED_ID_LIMIT`).
const PUSH_BATCH_MAX: usize = 200;
/// Most ids one `fetch` accepts; Collections read allows 2000 per call.
const FETCH_BATCH_MAX: usize = 2000;
/// Ids per `GET /composite/sobjects` request. Fewer than the 2000 the endpoint allows, because
/// they travel in the URL: 400 ids of 18 characters (plus encoded commas) keep it near 8 KB,
/// well under Salesforce's 16 KB URI limit.
const FETCH_IDS_PER_GET: usize = 400;

/// The Salesforce connector. All methods take `&self`; share it behind an `Arc`.
pub struct SalesforceConnector {
    // Boxed so that `AnyConnector` stays small whichever vendor it holds.
    inner: Box<Inner>,
}

struct Inner {
    client: Client,
    counters: Arc<ApiCounters>,
    map: FieldMap,
    object: String,
    external_id_field: String,
    poll_interval: Duration,
    overlap: Duration,
    page_size: u32,
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
                map: cfg.map,
                object: cfg.object,
                external_id_field: cfg.external_id_field,
                poll_interval: cfg.poll_interval,
                overlap: cfg.overlap,
                page_size: cfg.page_size,
            }),
        })
    }

    pub fn field_map(&self) -> &FieldMap {
        &self.inner.map
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
        if !object_type.eq_ignore_ascii_case(&this.object) {
            return None;
        }
        let has = |name: &str| fields.keys().any(|k| k.eq_ignore_ascii_case(name));
        let complete = this
            .select_fields()
            .iter()
            .filter(|f| !f.eq_ignore_ascii_case(wire::ID_FIELD))
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
        this.change_of(&rec, received_at).ok().map(|(c, _)| c)
    }
}

impl Inner {
    /// Fields read on every query and fetch: the keyset pair, the external id, the mapping.
    fn select_fields(&self) -> Vec<&str> {
        let mut out = vec![wire::ID_FIELD, wire::MODSTAMP_FIELD, self.external_id_field.as_str()];
        for p in self.map.properties() {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(p)) {
                out.push(p);
            }
        }
        out
    }

    fn change_of(
        &self,
        rec: &wire::Record,
        fetched_at: chrono::DateTime<Utc>,
    ) -> Result<(Change, mapping::Position), ConnectorError> {
        mapping::record_to_change(&self.map, &self.object, &self.external_id_field, rec, fetched_at)
            .map_err(|e| {
                tracing::warn!(connector = "salesforce", error = %e, "unusable record in response");
                ConnectorError::Transient(format!("salesforce {e}"))
            })
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

impl Connector for SalesforceConnector {
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Salesforce
    }

    fn limits(&self) -> Limits {
        Limits { push_batch_max: PUSH_BATCH_MAX, fetch_batch_max: FETCH_BATCH_MAX }
    }

    async fn poll_changes(&self, cursor: &Cursor) -> Result<Page, ConnectorError> {
        let this = &*self.inner;
        let state = cursor::decode(cursor)?;
        let start = cursor::start_of(state.as_ref());
        let soql = cursor::poll_soql(&this.select_fields(), &this.object, &start, this.page_size);
        let fetched_at = Utc::now();
        let records = this.client.query(&soql, this.page_size).await?;
        let mut changes = Vec::with_capacity(records.len());
        let mut positions = Vec::with_capacity(records.len());
        for rec in &records {
            let (change, pos) = this.change_of(rec, fetched_at)?;
            if !state.as_ref().is_some_and(|s| s.has_seen(&pos)) {
                changes.push(change);
            }
            positions.push(pos);
        }
        let full = records.len() >= this.page_size as usize;
        let next = cursor::advance(state.as_ref(), &positions, full, this.overlap);
        tracing::debug!(
            connector = "salesforce",
            rows = records.len(),
            emitted = changes.len(),
            full,
            "polled"
        );
        Ok(Page {
            changes,
            next_cursor: cursor::encode(next.as_ref()),
            poll_again_after: if full { Duration::ZERO } else { this.poll_interval },
        })
    }

    async fn fetch(&self, ids: &[RemoteId]) -> Result<Vec<Change>, ConnectorError> {
        let this = &*self.inner;
        // Ids of other objects, or not shaped like Salesforce ids, cannot be known here; a
        // malformed id would fail the whole request (MALFORMED_ID), so leave it out up front.
        let wanted: Vec<&str> = ids
            .iter()
            .filter(|r| r.object_type == this.object)
            .map(|r| r.id.as_str())
            .filter(|id| {
                (15..=18).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            .collect();
        let fields = this.select_fields().join(",");
        let target = format!("composite/sobjects/{}", this.object);
        let mut out = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(FETCH_IDS_PER_GET) {
            let mut call = Call::get(Target::Api(&target));
            call.query.push(("ids", chunk.join(",")));
            call.query.push(("fields", fields.clone()));
            let fetched_at = Utc::now();
            let body = this.client.call(&call).await?;
            let rows: CollectionRead = client::parse_json(&body, "records")?;
            for rec in rows.iter().flatten() {
                out.push(this.change_of(rec, fetched_at)?.0);
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
            match &rec.op {
                PushOp::Create { object_type } if *object_type == this.object => {
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
                PushOp::Update { remote } if remote.object_type == this.object => updates.push(i),
                PushOp::Create { object_type: t }
                | PushOp::Update { remote: RemoteId { object_type: t, .. } } => {
                    outcomes[i] = Some(PushOutcome::Rejected {
                        outbox_id: rec.outbox_id,
                        code: "unsupported_object".into(),
                        message: format!("this connector writes {} records, not {t}", this.object),
                    });
                }
            }
        }
        let upsert_target =
            format!("composite/sobjects/{}/{}", this.object, this.external_id_field);
        for chunk in creates.chunks(PUSH_BATCH_MAX) {
            let records = chunk
                .iter()
                .map(|&i| {
                    mapping::create_record(
                        &this.map,
                        &this.object,
                        &this.external_id_field,
                        &batch[i],
                    )
                })
                .collect();
            let results = this.write(&upsert_target, records).await?;
            for (&i, result) in chunk.iter().zip(results) {
                outcomes[i] =
                    Some(mapping::save_outcome(batch[i].outbox_id, &this.object, None, result));
            }
        }
        for chunk in updates.chunks(PUSH_BATCH_MAX) {
            let mut records = Vec::with_capacity(chunk.len());
            let mut ids = Vec::with_capacity(chunk.len());
            for &i in chunk {
                if let PushOp::Update { remote } = &batch[i].op {
                    records.push(mapping::update_record(
                        &this.map,
                        &this.object,
                        &remote.id,
                        &batch[i],
                    ));
                    ids.push(remote.id.as_str());
                }
            }
            let results = this.write("composite/sobjects", records).await?;
            for ((&i, id), result) in chunk.iter().zip(ids).zip(results) {
                outcomes[i] =
                    Some(mapping::save_outcome(batch[i].outbox_id, &this.object, Some(id), result));
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
        let soql = format!("SELECT Id FROM {} LIMIT 1", this.object);
        let mut call = Call::get(Target::Api("query"));
        call.query.push(("q", soql));
        let _: wire::QueryResponse = client::parse_json(&this.client.call(&call).await?, "query")?;
        Ok(())
    }

    fn counters(&self) -> Arc<ApiCounters> {
        Arc::clone(&self.inner.counters)
    }
}
