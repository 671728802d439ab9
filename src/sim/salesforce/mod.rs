//! Simulated Salesforce REST API (OAuth client credentials, SOQL query with cursors, sObject
//! rows and collections, limits), faithful to the quirks in api-facts §2 and §7.
//!
//! Start it with [`SalesforceSim::start`] on `127.0.0.1:0`, point a client at
//! [`SalesforceSim::base_url`], seed data with [`SalesforceSim::insert`] (not an API call), and
//! break it on purpose with [`SalesforceSim::inject`].
//!
//! Code map: `store.rs` holds records and write validation, `soql.rs` parses and evaluates
//! queries, `server.rs` maps HTTP to both and shapes responses and errors like Salesforce.
//!
//! Where api-facts is silent the choices are written next to the code and summed up here:
//! wrong JSON types fail the request with `JSON_PARSER_ERROR` (Salesforce fails while
//! deserialising); an unknown but well-formed id in an update or delete is
//! `INVALID_CROSS_REFERENCE_KEY`; surrounding whitespace on `Email` is trimmed; picklist values
//! match exactly; a query record carries `Id` only when it was selected, as in Salesforce.
//! `OwnerId` must name one of the org's users ([`owner_user_ids`]) or, on a Lead, its queue
//! ([`owner_queue_id`]): a well-formed id of anything else is `FIELD_INTEGRITY_EXCEPTION`
//! naming `OwnerId`, a malformed one (or a queue on a Contact) `MALFORMED_ID`.
//!
//! Identity changes: [`SalesforceSim::merge_records`] models a UI merge (losers to the recycle
//! bin with `MasterRecordId`, master's blank fields filled from the losers; External ID and
//! owner never copied; an opt-out on any record survives), [`SalesforceSim::convert_lead`] a
//! lead conversion (Account named after `Company`, Contact filled from the lead), and
//! [`SalesforceSim::ui_delete`] a delete. Deleted rows are only visible through `queryAll` (and
//! `/sobjects/{type}/deleted`); collections reads answer `null` for them, as Salesforce does.
//!
//! Closed-loop objects (Campaign, CampaignMember, Opportunity, OpportunityContactRole) live in
//! the same store and are served by the same endpoints; their fields, derived values and the
//! choices made where the Object Reference is silent are in `closed_loop.rs`, with the UI
//! helpers and [`SalesforceSim::seed_closed_loop`]. So do activities (`Task`, with the
//! `LastActivityDate` Salesforce keeps on the Lead or Contact a task names; facts and choices
//! in `store/activities.rs`; [`SalesforceSim::log_task`] logs one as a rep would).
//!
//! Outbound messages (api-facts §2.7; `outbound.rs`, delivery in [`crate::sim::webhooks`]) are
//! off unless [`SalesforceOutboundOptions::endpoint_url`] is set (or
//! [`SalesforceSim::set_outbound_url`]). They model a workflow rule on Lead "created, and every
//! time it's edited": one notification (`04l…` id, kept across retries) per committed Lead
//! create or edit by any path (REST single, collections, upsert, `insert`, `ui_update`,
//! `convert_lead`); writes rolled back by `allOrNone` and deletes send nothing; `touch_system`
//! sends nothing. Values are read at send time, on every try; a record deleted before sending
//! gets a notification with only `sf:Id`. Success is HTTP 200 with `notificationsResponse` ›
//! `Ack` = `true` in the outbound namespace; anything else is retried. Back-off: 5 s doubling,
//! capped at 2 h, while the total stays within 24 h (21 retries), ±20 % jitter, scaled by
//! `time_scale`; Salesforce documents no first interval, and a Salesforce employee on
//! StackExchange (question 142580) puts it at 2-5 s. Timeout 60 s (Salesforce help,
//! "Considerations for Outbound Messages"). Up to 100 notifications per message, gathered for
//! `batch_window` (50 ms); 10 messages in flight (Salesforce documents no number). Datetimes are
//! sent as `2024-05-01T10:00:00.000Z`; URL userinfo is sent as `Authorization: Basic` and
//! removed from the URL. Changes made while no URL is set are never sent.

#[cfg(test)]
mod activities_tests;
mod closed_loop;
#[cfg(test)]
mod closed_loop_tests;
mod outbound;
#[cfg(test)]
mod outbound_tests;
mod server;
pub mod soap;
mod soql;
mod store;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

pub use closed_loop::{ClosedLoopSeed, ClosedLoopSeeded};
pub use outbound::{DEFAULT_OUTBOUND_FIELDS, SalesforceOutboundOptions, salesforce_retry_schedule};
use store::{Obj, Store, decode};
pub use store::{owner_queue_id, owner_user_ids};

/// Knobs of the simulated org. Numbers Salesforce changes over time are settings here.
#[derive(Debug, Clone)]
pub struct SalesforceSimOptions {
    /// Connected app consumer key accepted by the token endpoint.
    pub client_id: String,
    /// Connected app consumer secret accepted by the token endpoint.
    pub client_secret: String,
    /// Custom External ID fields on Lead and Contact: unique, matched case-insensitively.
    pub external_id_fields: Vec<String>,
    /// Data calls allowed before 403 `REQUEST_LIMIT_EXCEEDED` (the "daily" allocation; it never
    /// resets on its own).
    pub daily_api_limit: u64,
    /// Query page size when the client sends no `Sforce-Query-Options: batchSize=N`.
    pub query_batch_size: usize,
    /// Idle session timeout; `None` keeps tokens valid until revoked.
    pub session_ttl: Option<Duration>,
    /// Added before every request is answered.
    pub latency: Duration,
    /// Data calls that may run at once before 403 `REQUEST_LIMIT_EXCEEDED`
    /// ("ConcurrentPerOrgLongTxn"); `None` means no limit.
    pub max_concurrent: Option<usize>,
    /// Idle time after which a query locator is gone (404 `INVALID_QUERY_LOCATOR`).
    pub query_locator_ttl: Duration,
    /// Open query cursors kept per org; the oldest is dropped beyond this (Salesforce keeps 10
    /// per user).
    pub max_open_cursors: usize,
    /// Store datetimes with whole-second precision, as many real orgs show (`.000`), so that
    /// several records can share one `SystemModstamp`. Off by default: modstamps then strictly
    /// increase by at least 1 ms per write, a total order.
    pub second_precision_dates: bool,
    /// The outbound message action on Lead (off unless `outbound.endpoint_url` is set).
    pub outbound: SalesforceOutboundOptions,
    /// Custom fields an admin added to Lead and Contact (`("Country", Text)`); a query naming
    /// a field the org lacks is `INVALID_FIELD`, as in Salesforce.
    pub custom_fields: Vec<(String, SimFieldType)>,
}

/// The type of a custom field of the simulated org.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFieldType {
    Text,
    Number,
    /// `YYYY-MM-DD`.
    Date,
    DateTime,
}

impl Default for SalesforceSimOptions {
    fn default() -> SalesforceSimOptions {
        SalesforceSimOptions {
            client_id: "sim-client-id".to_owned(),
            client_secret: "sim-client-secret".to_owned(),
            external_id_fields: vec!["Leadsync_Id__c".to_owned()],
            daily_api_limit: 100_000,
            query_batch_size: 2000,
            session_ttl: Some(Duration::from_secs(2 * 3600)),
            latency: Duration::ZERO,
            max_concurrent: None,
            query_locator_ttl: Duration::from_secs(15 * 60),
            max_open_cursors: 10,
            second_precision_dates: false,
            outbound: SalesforceOutboundOptions::default(),
            custom_fields: Vec::new(),
        }
    }
}

/// Decides whether an injected record failure applies; it sees the record as it would look
/// after the write (existing fields overlaid with the sent ones, wire names and shapes).
pub type RecordPredicate = Arc<dyn Fn(&Map<String, Value>) -> bool + Send + Sync>;

/// Failures to inject. Call-level faults hit data calls (`/services/data/...`) after the
/// session check, in the order: delay, server error, request limit.
#[derive(Clone)]
pub enum Fault {
    /// The next `count` data calls answer `status` (500 gives `UNKNOWN_EXCEPTION`, anything
    /// else `SERVER_UNAVAILABLE`) without doing anything; not counted against the API limit.
    ServerError { status: u16, count: u32 },
    /// The next `count` data calls answer 403 `REQUEST_LIMIT_EXCEEDED`.
    RequestLimit { count: u32 },
    /// Every issued token stops working now, as after a session timeout.
    ExpireSessions,
    /// The next `count` data calls wait `delay` before being handled (client timeouts).
    Delay { delay: Duration, count: u32 },
    /// The next write (create, update, upsert or delete) of an `object` record matching
    /// `matches` fails with `status_code` (e.g. `UNABLE_TO_LOCK_ROW`); fires once.
    RecordError { object: String, matches: RecordPredicate, status_code: String, message: String },
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::ServerError { status, count } => {
                write!(f, "ServerError {{ status: {status}, count: {count} }}")
            }
            Fault::RequestLimit { count } => write!(f, "RequestLimit {{ count: {count} }}"),
            Fault::ExpireSessions => write!(f, "ExpireSessions"),
            Fault::Delay { delay, count } => {
                write!(f, "Delay {{ delay: {delay:?}, count: {count} }}")
            }
            Fault::RecordError { object, status_code, .. } => {
                write!(f, "RecordError {{ object: {object}, status_code: {status_code} }}")
            }
        }
    }
}

/// What clients did to the simulator so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// GET, query, queryMore and collection-read calls.
    pub api_reads: u64,
    /// Create, update, upsert and delete calls (one per HTTP request, not per record).
    pub api_writes: u64,
    pub token_requests: u64,
    /// Responses with a 4xx or 5xx status, token endpoint included.
    pub errors_returned: u64,
    pub records_created: u64,
    pub records_updated: u64,
    pub records_deleted: u64,
    /// Per-record failures reported inside 2xx responses (and single-record 4xx).
    pub record_errors: u64,
    /// Outbound message POSTs sent (first tries and retries).
    pub outbound_requests_sent: u64,
    /// Outbound messages acknowledged (HTTP 200 with `Ack` true).
    pub outbound_requests_succeeded: u64,
    /// Tries that failed (other status, no or false ack, timeout, connection failure).
    pub outbound_failed_attempts: u64,
    /// Notifications given up on after 24 hours of retries.
    pub outbound_notifications_dropped: u64,
    /// Notifications queued now (waiting, in flight, or between retries).
    pub outbound_notifications_queued: u64,
}

#[derive(Debug, Default)]
struct Counters {
    api_reads: AtomicU64,
    api_writes: AtomicU64,
    token_requests: AtomicU64,
    errors_returned: AtomicU64,
    records_created: AtomicU64,
    records_updated: AtomicU64,
    records_deleted: AtomicU64,
    record_errors: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// An open query cursor: the rows as they were when the query ran.
#[derive(Debug)]
struct Cursor {
    obj: Obj,
    fields: Vec<usize>,
    rows: Vec<(String, Vec<store::Val>)>,
    batch: usize,
    last_access: Instant,
}

#[derive(Default)]
struct Faults {
    server_errors: Vec<(u16, u32)>,
    limit_errors: u32,
    delays: Vec<(Duration, u32)>,
    records: Vec<(Obj, RecordPredicate, String, String)>,
}

struct State {
    store: Store,
    /// token → last use.
    sessions: HashMap<String, Instant>,
    cursors: HashMap<String, Cursor>,
    cursor_seq: u64,
    faults: Faults,
    api_used: u64,
}

struct Inner {
    opts: SalesforceSimOptions,
    state: Mutex<State>,
    base_url: Mutex<Option<String>>,
    counters: Counters,
    inflight: AtomicUsize,
    outbound: outbound::Outbound,
    /// A weak handle on this `Inner`, for delivery tasks that must not keep it alive.
    me: Weak<Inner>,
    /// Set by [`SalesforceSim::stop`]: ends the server task.
    stop: tokio::sync::watch::Sender<bool>,
}

/// The state lock. Lead writes committed (and not rolled back) while it is held become
/// outbound notifications when it is released, in commit order.
struct StateGuard<'a> {
    guard: MutexGuard<'a, State>,
    inner: &'a Inner,
}

impl Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        if !self.guard.store.lead_writes.is_empty() {
            let ids = std::mem::take(&mut self.guard.store.lead_writes);
            self.inner.outbound.emit(self.inner, ids);
        }
    }
}

impl Inner {
    /// The lock is never held across `.await`; a panic while holding it leaves data that is
    /// still consistent enough for a simulator, so poisoning is ignored.
    fn lock(&self) -> StateGuard<'_> {
        let guard = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        StateGuard { guard, inner: self }
    }
}

/// Handle to one simulated org; clones share it.
#[derive(Clone)]
pub struct SalesforceSim {
    inner: Arc<Inner>,
}

impl fmt::Debug for SalesforceSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SalesforceSim").field("base_url", &self.base_url()).finish()
    }
}

impl SalesforceSim {
    pub fn new(opts: SalesforceSimOptions) -> SalesforceSim {
        let mut store = Store::new(&opts.external_id_fields, opts.second_precision_dates);
        let custom: Vec<(String, store::Kind)> = opts
            .custom_fields
            .iter()
            .map(|(name, ty)| {
                let kind = match ty {
                    SimFieldType::Text => store::Kind::Text,
                    SimFieldType::Number => store::Kind::Number,
                    SimFieldType::Date => store::Kind::Date,
                    SimFieldType::DateTime => store::Kind::DateTime,
                };
                (name.clone(), kind)
            })
            .collect();
        store.add_custom_fields(&custom);
        let outbound = outbound::Outbound::new(&opts.outbound);
        SalesforceSim {
            inner: Arc::new_cyclic(|me| Inner {
                outbound,
                me: me.clone(),
                stop: tokio::sync::watch::channel(false).0,
                opts,
                state: Mutex::new(State {
                    store,
                    sessions: HashMap::new(),
                    cursors: HashMap::new(),
                    cursor_seq: 0,
                    faults: Faults::default(),
                    api_used: 0,
                }),
                base_url: Mutex::new(None),
                counters: Counters::default(),
                inflight: AtomicUsize::new(0),
            }),
        }
    }

    /// The whole API as an axum router (token endpoint and `/services/data/...`).
    pub fn router(&self) -> axum::Router {
        server::router(Arc::clone(&self.inner))
    }

    /// Bind (e.g. `"127.0.0.1:0"`), serve in a spawned task, return the bound address. Sets
    /// the `instance_url` that tokens carry. The server runs until [`SalesforceSim::stop`] or
    /// the runtime shuts down.
    ///
    /// # Errors
    /// Fails when the address cannot be bound.
    pub async fn start(&self, addr: &str) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        *self.inner.base_url.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(format!("http://{local}"));
        let app = self.router();
        let mut stop = self.inner.stop.subscribe();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                tracing::warn!(error = %error, "salesforce simulator stopped");
            }
        });
        Ok(local)
    }

    /// `http://127.0.0.1:PORT` after [`SalesforceSim::start`]; empty before.
    pub fn base_url(&self) -> String {
        self.inner
            .base_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_default()
    }

    /// Create a record as a person in the UI or an import would (not an API call, not
    /// counted): validates like the API, assigns Id and dates, returns the Id.
    ///
    /// # Errors
    /// `"<CODE>: <message>"` for an unknown object or a record Salesforce would reject.
    pub fn insert(&self, object: &str, fields: Map<String, Value>) -> Result<String, String> {
        let obj =
            Obj::parse(object).ok_or_else(|| format!("INVALID_TYPE: unknown object {object}"))?;
        let mut st = self.inner.lock();
        let inc = decode(&st.store.table(obj).schema, &fields)
            .map_err(|m| format!("JSON_PARSER_ERROR: {m}"))?;
        let (id, _) =
            st.store.create(obj, &inc).map_err(|e| format!("{}: {}", e.code, e.message))?;
        Ok(id)
    }

    /// Edit a record as a person in the UI would (not counted); moves the modstamps.
    ///
    /// # Errors
    /// `"<CODE>: <message>"` when the record is missing or the edit is invalid.
    pub fn ui_update(
        &self,
        object: &str,
        id: &str,
        fields: Map<String, Value>,
    ) -> Result<(), String> {
        let (obj, row, mut st) = self.locate(object, id)?;
        let inc = decode(&st.store.table(obj).schema, &fields)
            .map_err(|m| format!("JSON_PARSER_ERROR: {m}"))?;
        st.store.update(obj, row, &inc).map_err(|e| format!("{}: {}", e.code, e.message))?;
        Ok(())
    }

    /// Delete a record as a person in the UI would (to the recycle bin; `queryAll` still sees
    /// it with `IsDeleted = true`).
    ///
    /// # Errors
    /// `"<CODE>: <message>"` when the record is missing or already deleted.
    pub fn ui_delete(&self, object: &str, id: &str) -> Result<(), String> {
        let (obj, row, mut st) = self.locate(object, id)?;
        st.store.delete(obj, row).map_err(|e| format!("{}: {}", e.code, e.message))?;
        Ok(())
    }

    /// Convert a lead as the UI's Convert button would: creates an Account named after the
    /// lead's `Company` (see [`SalesforceSim::account_name`]) and a Contact under it with the
    /// lead's name, title, email, phone, lead source and opt-out, then sets `IsConverted`,
    /// `ConvertedContactId` and `Status = Closed - Converted`; returns the Contact id. Custom
    /// fields (the External ID) are not carried over: that needs a lead field mapping an
    /// admin sets up, which the simulator does not model.
    ///
    /// # Errors
    /// `"<CODE>: <message>"` when the lead is missing, deleted or already converted.
    pub fn convert_lead(&self, lead_id: &str) -> Result<String, String> {
        let (_, row, mut st) = self.locate("Lead", lead_id)?;
        st.store.convert_lead(row).map_err(|e| format!("{}: {}", e.code, e.message))
    }

    /// Merge `loser_ids` (one or two) into `master_id`, as a person merging duplicates in the
    /// UI (or a SOAP `merge()` call) would; not counted as an API call. The losers go to the
    /// recycle bin with `IsDeleted = true` and `MasterRecordId = master_id`, visible only
    /// through `queryAll`; the master's blank fields are filled from the losers (see the
    /// module docs for which) and its `LastModifiedDate`/`SystemModstamp` move. A merged Lead
    /// master fires its outbound message like any edit.
    ///
    /// # Errors
    /// `"<CODE>: <message>"` for an unknown object, a missing, deleted or converted record,
    /// an id of another object, no or more than two losers, or the master among the losers.
    pub fn merge_records(
        &self,
        object: &str,
        master_id: &str,
        loser_ids: &[&str],
    ) -> Result<(), String> {
        let (obj, master, mut st) = self.locate(object, master_id)?;
        let mut losers = Vec::with_capacity(loser_ids.len());
        for id in loser_ids {
            let row = st
                .store
                .table(obj)
                .row_of(id)
                .ok_or_else(|| format!("INVALID_ID_FIELD: no {} with id {id}", obj.name()))?;
            losers.push(row);
        }
        st.store.merge(obj, master, &losers).map_err(|e| format!("{}: {}", e.code, e.message))
    }

    /// The name of an Account made by [`SalesforceSim::convert_lead`] (the lead's `Company`).
    pub fn account_name(&self, account_id: &str) -> Option<String> {
        let st = self.inner.lock();
        st.store.accounts.iter().find(|(id, _)| id == account_id).map(|(_, name)| name.clone())
    }

    /// Move only `SystemModstamp`, as a system process (sharing recalculation, automation)
    /// does; `LastModifiedDate` stays.
    ///
    /// # Errors
    /// `"<CODE>: <message>"` when the record is missing.
    pub fn touch_system(&self, object: &str, id: &str) -> Result<(), String> {
        let (obj, row, mut st) = self.locate(object, id)?;
        st.store.touch_system(obj, row);
        Ok(())
    }

    /// Move the simulated wall clock forward (dates of later writes), for tests of time
    /// windows without sleeping.
    pub fn advance_clock(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let mut st = self.inner.lock();
        st.store.clock_offset_ms = st.store.clock_offset_ms.saturating_add(ms);
    }

    fn locate(&self, object: &str, id: &str) -> Result<(Obj, usize, StateGuard<'_>), String> {
        let obj =
            Obj::parse(object).ok_or_else(|| format!("INVALID_TYPE: unknown object {object}"))?;
        let st = self.inner.lock();
        let row = st
            .store
            .table(obj)
            .row_of(id)
            .ok_or_else(|| format!("NOT_FOUND: no {} with id {id}", obj.name()))?;
        Ok((obj, row, st))
    }

    /// All fields of one record (deleted ones too), in wire shape.
    pub fn get(&self, object: &str, id: &str) -> Option<Map<String, Value>> {
        let obj = Obj::parse(object)?;
        let st = self.inner.lock();
        let table = st.store.table(obj);
        table.row_of(id).map(|row| table.wire(row))
    }

    /// Every live (not deleted) record of `object`, ordered by Id.
    pub fn all(&self, object: &str) -> Vec<Map<String, Value>> {
        let Some(obj) = Obj::parse(object) else {
            return Vec::new();
        };
        let st = self.inner.lock();
        let table = st.store.table(obj);
        (0..table.rows.len())
            .filter(|r| !table.rows[*r].is_deleted())
            .map(|r| table.wire(r))
            .collect()
    }

    /// Invalidate every issued access token.
    pub fn revoke_tokens(&self) {
        self.inner.lock().sessions.clear();
    }

    /// Arm a fault; see [`Fault`].
    pub fn inject(&self, fault: Fault) {
        let mut st = self.inner.lock();
        match fault {
            Fault::ServerError { status, count } => st.faults.server_errors.push((status, count)),
            Fault::RequestLimit { count } => st.faults.limit_errors += count,
            Fault::ExpireSessions => st.sessions.clear(),
            Fault::Delay { delay, count } => st.faults.delays.push((delay, count)),
            Fault::RecordError { object, matches, status_code, message } => {
                if let Some(obj) = Obj::parse(&object) {
                    st.faults.records.push((obj, matches, status_code, message));
                }
            }
        }
    }

    /// Counters of what clients did so far.
    pub fn stats(&self) -> SimStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let ob = self.inner.outbound.stats();
        SimStats {
            api_reads: get(&c.api_reads),
            api_writes: get(&c.api_writes),
            token_requests: get(&c.token_requests),
            errors_returned: get(&c.errors_returned),
            records_created: get(&c.records_created),
            records_updated: get(&c.records_updated),
            records_deleted: get(&c.records_deleted),
            record_errors: get(&c.record_errors),
            outbound_requests_sent: ob.requests_sent,
            outbound_requests_succeeded: ob.requests_succeeded,
            outbound_failed_attempts: ob.failed_attempts,
            outbound_notifications_dropped: ob.items_dropped,
            outbound_notifications_queued: ob.items_queued,
        }
    }

    /// Point the Lead outbound message at `url` (`None` switches it off). Writes made while
    /// it is off are never sent; queued notifications go to the new URL.
    pub fn set_outbound_url(&self, url: Option<String>) {
        self.inner.outbound.set_endpoint_url(url);
    }

    /// The org id outbound messages carry (18 characters).
    pub fn organization_id(&self) -> String {
        store::org_id()
    }

    /// Stop serving and stop outbound delivery (queued notifications are abandoned).
    /// Idempotent.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
        self.inner.outbound.stop();
    }

    /// Data calls counted against the daily limit so far.
    pub fn api_usage(&self) -> u64 {
        self.inner.lock().api_used
    }
}
