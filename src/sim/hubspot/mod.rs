//! Simulated HubSpot CRM v3 contacts API (plus the communication-preferences v4 calls that hold
//! email opt-out), served in-process by axum for the demo, the integration tests and the
//! benchmarks.
//!
//! The simulator is deliberately *not* kinder than HubSpot: it keeps the quirks a connector has to
//! survive (forward-only `lifecyclestage`, read-only `hs_email_optout`, exact status codes, 207
//! partial batches, the 10,000-result search ceiling, a separate search rate limit without
//! headers, an eventually consistent search index, merged ids that resolve to another id).
//!
//! # Decisions where the vendor notes (api-facts §8) are silent
//! Each was checked against public reports where possible; the source is named.
//! - **Backward `lifecyclestage` through the API is ignored silently**: 200, the old value stays,
//!   and if nothing else changed `lastmodifieddate` does not move. Forum threads (HubSpot
//!   developer forum "Update Lifecycle Stage Using API", and several consultants' write-ups) report
//!   a success response with no change. Clearing to `""` first, then writing, works. People in
//!   the UI ([`HubspotSim::ui_update`]) may move it backwards. Order: subscriber < lead <
//!   marketingqualifiedlead < salesqualifiedlead < opportunity < customer < evangelist < other.
//! - **Emails are case-insensitive and stored lower-cased and trimmed.** Uniqueness, `idProperty=
//!   email` look-ups and upserts ignore case and surrounding whitespace, and reads return the
//!   lower-cased form, so a connector that compares values byte-for-byte sees a difference it must
//!   not echo back. Malformed addresses get `INVALID_EMAIL`.
//! - **`batch/create` with an email that already exists fails the whole batch** with 409
//!   `CONFLICT` "Contact already exists. Existing ID: <id>" naming the first one found, and
//!   nothing is created (HubSpot/hubspot-api-python#51). Two inputs with the same email in one
//!   batch also give 409.
//! - **`batch/update` only accepts record ids.** An `idProperty` other than `hs_object_id` gives 400
//!   "Unable to perform update/upsert by non-unique 0-1 property <name>"
//!   (HubSpot/hubspot-api-nodejs#548); use `batch/upsert` with `idProperty:"email"` instead.
//!   Unknown ids in `batch/update` give 207 with an `OBJECT_NOT_FOUND` error whose
//!   `context.ids` lists them; the known ids are updated.
//! - **A property validation error anywhere in a batch fails the whole batch** with 400
//!   `VALIDATION_ERROR` (message `Property values were not valid: [...]` as HubSpot words it,
//!   plus `errors[]` with `code` and `context.propertyName`); nothing is written.
//! - **Owners**: `GET /crm/v3/owners` lists the portal's three owners ([`OWNERS`]), paged like
//!   the other v3 lists; writing `hubspot_owner_id` with any other id is a property validation
//!   error (code `INVALID_OWNER_ID`, so a whole batch gets 400 `VALIDATION_ERROR`).
//! - **`hs_email_optout` is read-only** for the contacts API and for `ui_update`: writing it gives
//!   400 `VALIDATION_ERROR` with code `READ_ONLY_VALUE` and the message "hs_email_optout is a read
//!   only property; its value cannot be set." (wording reported on the HubSpot forum). So are
//!   `hs_object_id`, `createdate`, `lastmodifieddate`, `hs_merged_object_ids`,
//!   `hs_additional_emails` and `notes_last_contacted`.
//! - **`notes_last_contacted` ("Last contacted")** is HubSpot's own: the time of the latest
//!   call, meeting, sales email (or other contact) logged on the contact, never lowered by an
//!   older one. Notes do not move it (they move "last activity", which is not modelled).
//!   Engagement objects are not modelled: [`HubspotSim::log_engagement`] stands for a rep
//!   logging one, and moves `lastmodifieddate` like any other change.
//! - **Opt-out is per email address**, as HubSpot documents for subscription status. `POST
//!   /communication-preferences/v4/statuses/{email}/unsubscribe-all?channel=EMAIL` records the
//!   address as unsubscribed from all email, and sets `hs_email_optout="true"` (moving
//!   `lastmodifieddate`) on the contact that holds that address (including as a merged-in
//!   secondary address). `POST /communication-preferences/v4/statuses/batch/unsubscribe-all?
//!   channel=EMAIL` with `{"inputs": [emails]}` does the same for up to 100 addresses in one
//!   (one write) call; an input that is not an email address becomes a 207 error entry naming
//!   it (`context.ids`) while the others are applied, and repeated addresses are reported once.
//!   HubSpot's reference gives the route and the batch response shape but not the input cap
//!   or the per-input error shape; we assume 100, like the contacts batch endpoints.
//!   A contact created later with an opted-out address starts with
//!   `hs_email_optout="true"`. There is no way back through the API: setting `SUBSCRIBED` for an
//!   address that opted out of all email, or out of that subscription, gives 400. (HubSpot's v4
//!   schema has a `RESUBSCRIBE_OCCURRED` success reason, so some portals may allow it; we
//!   choose the strict behaviour.)
//! - **`updatedAt` and `lastmodifieddate` are the same instant** and move on every write that
//!   changes something (including an opt-out); a write that changes nothing moves neither.
//!   [`HubspotSim::internal_touch`] moves both without a visible change, like HubSpot's own
//!   internal updates do. Many records may share one millisecond.
//! - **Responses always carry `hs_object_id`, `createdate` and `lastmodifieddate`** besides the
//!   requested properties; requested but unknown property names are left out, requested known
//!   ones that are unset come back `null`. Writing `""` (or JSON `null`) clears a property.
//! - **Search**: `EQ`/`NEQ` on text compare case-insensitively; `IN`/`NOT_IN` compare the
//!   lower-cased stored value with the values *as given* (so upper-case values never match, as
//!   api-facts warns); `NEQ`/`NOT_IN` also match records without the property; unknown
//!   properties in filters or sorts give 400. Search calls count against the daily quota but not
//!   the 10-second window, and carry no rate-limit headers.
//! - **The list endpoint rejects `limit` above 100** with 400 rather than clamping it.
//! - **DELETE of an unknown id answers 204** (archive is idempotent); archived contacts free their
//!   email for a new contact.
//! - **Merge** keeps the primary's id and values (empty ones filled from the other), lists the
//!   merged id in `hs_merged_object_ids` (`;`-separated) and the merged email in
//!   `hs_additional_emails`; the old id and old email keep resolving to the primary.
//! - **Property history** (`propertiesWithHistory` on `GET /contacts`, `GET /{id}` and
//!   `batch/read`): per asked known property, its values newest first as `{value, timestamp,
//!   sourceType}`; a value from the create is dated at the create. `hs_merged_object_ids` gets
//!   an entry at each merge, so a merge stays dated when it happened after later writes move
//!   `lastmodifieddate` on. `sourceType` is `API` for writes and `MERGE` for what a merge
//!   moved (HubSpot names more sources, such as `CRM_UI`; the sim does not tell them apart).
//!   Search answers carry no history, as in HubSpot.
//! - **Archived contacts** are listed by `GET /contacts?archived=true` (with `archived: true`
//!   and `archivedAt`) and read by `batch/read?archived=true` and `GET /{id}?archived=true`;
//!   they do not resolve merged-away ids. **Restore** ([`HubspotSim::ui_restore`]) works for 90
//!   days after archiving and is refused while another live contact holds the email.
//!   **GDPR delete** ([`HubspotSim::gdpr_delete`]) erases the record: afterwards nothing
//!   resolves to it, archived or not, and ids merged into it stop resolving too. The API's
//!   `POST /gdpr-delete` (`{objectId, idProperty?}`) does the same and answers 204; by an email
//!   no contact holds it blocklists the address (204, [`HubspotSim::is_blocklisted`]; later
//!   creates with it are not refused, which the notes do not settle); an unknown id is 404.
//! - Requests refused with 401 or 429 do not use quota. Faults injected with
//!   [`HubspotSim::inject`] do.
//!
//! # App webhooks (api-facts §1.7; code in `hooks.rs`, delivery in [`crate::sim::webhooks`])
//! Off unless [`HubspotWebhookOptions::target_url`] is set (or [`HubspotSim::set_webhook_target`]
//! / `PUT /webhooks/v3/{appId}/settings` sets it). Choices where the notes are silent:
//! - **Every committed change fires events, whoever made it**: API calls (`changeSource: API`,
//!   `sourceId` = the app id; HubSpot does not filter an app's own writes) and the handle's
//!   methods (`CRM_UI`, `sourceId: "userId:1"`; `insert` counts as UI too). Creation sends
//!   `contact.creation` (`changeFlag: CREATED`) *and* one `contact.propertyChange` per property
//!   set at creation. An update sends one propertyChange per property whose value changed
//!   (cleared ones with `propertyValue: ""`); a write that changes nothing sends nothing.
//!   Archive sends `contact.deletion`; merge sends `contact.merge` (on the primary id,
//!   `numberOfPropertiesMoved` = properties filled from the merged contact, additional emails
//!   included) plus propertyChange events for those. An opt-out sends a propertyChange of
//!   `hs_email_optout`. `internal_touch` sends nothing. Computed properties
//!   (`lastmodifieddate`, `createdate`, `hs_object_id`, `hs_merged_object_ids`) never fire.
//!   [`HubspotSim::ui_restore`] sends `contact.restore` and [`HubspotSim::gdpr_delete`]
//!   `contact.privacyDeletion` (so does `POST /gdpr-delete`; the API has no restore call).
//! - **Changes made while there is no target are not sent later.**
//! - **Retries**: any non-2xx answer (4xx included, as api-facts says; HubSpot's older guide
//!   exempted 400/401/403/404/405 and honoured `Retry-After` on 429, which we do not), a
//!   timeout (5 s) or a connection failure. Ten retries: 2, 4, 8 … 512 minutes after each
//!   failure (the older guide's "first retry in 2 minutes, the second in 4, the third in 8"),
//!   then the tenth at 24 h after the first try (the current guide: "up to 10 times … spread
//!   out over the next 24 hours … some randomization"), each ±20 % jitter, scaled by
//!   `time_scale`; then the batch is dropped and counted. Each try is re-signed with a fresh
//!   timestamp and carries `attemptNumber` 0, 1, 2 … with the same `eventId`s.
//! - **Batches** hold up to 100 events gathered for `batch_window` (default 50 ms); at most
//!   `maxConcurrentRequests` (default 10, raised to 5 if set lower) requests are in flight.
//! - **Signatures**: v3 always, over the target URL as parsed (a bare host gains its `/`);
//!   v1 or v2 in addition when configured.
//! - **Management API** (`/webhooks/v3/{appId}/settings` GET/PUT/DELETE,
//!   `/subscriptions` GET/POST) takes the same bearer token as the rest of the simulator and
//!   counts as API calls; unknown app ids give 404. New subscriptions are paused
//!   (`active: false`) unless the body says otherwise, as in HubSpot's developer portal.

mod deals;
#[cfg(test)]
mod deals_tests;
mod hooks;
mod search;
mod server;
mod store;
pub use store::OWNERS;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod webhook_tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use std::ops::{Deref, DerefMut};

pub use hooks::{
    CONTACT_EVENT_TYPES, ChangeSource, HubspotWebhookOptions, LegacySignature,
    MIN_CONCURRENT_REQUESTS, WebhookSubscription, hubspot_retry_schedule,
};
use store::{Store, WriteError};

/// Knobs of the simulated portal. `Default` gives HubSpot's documented Enterprise private-app
/// limits and an immediately consistent search index.
#[derive(Debug, Clone)]
pub struct HubspotSimOptions {
    /// The private-app token that `Authorization: Bearer <token>` must carry.
    pub token: String,
    /// Version segment in `/crm/<version>/objects/contacts` (`v3`, or a dated one like `2026-03`).
    pub api_version: String,
    /// Requests allowed per rolling 10 seconds; `None` disables the limit and its headers.
    pub rate_limit_per_10s: Option<u32>,
    /// Requests allowed per UTC day; `None` disables the limit and its headers.
    pub daily_limit: Option<u64>,
    /// Search requests allowed per rolling second; `None` disables it.
    pub search_per_second: Option<u32>,
    /// How long a write takes to become visible to search (old values stay visible until then).
    /// Applies to every write, `insert` and the other UI methods included.
    pub search_index_delay: Duration,
    /// Added before every HTTP answer.
    pub latency: Duration,
    /// Largest `limit` a search accepts (HubSpot: 200).
    pub search_max_limit: u32,
    /// Results a search can page through (HubSpot: 10,000; `after + limit` beyond it is a 400).
    pub search_max_results: u64,
    /// Filter caps: groups, filters per group, filters in total (api-facts: 5 / 6 / 18 in some
    /// doc revisions, 5 / 10 / 25 since the 2024-08 changelog).
    pub search_max_filter_groups: usize,
    pub search_max_filters_per_group: usize,
    pub search_max_filters_total: usize,
    /// Extra custom text properties the portal defines, besides the built-in ones.
    pub extra_properties: Vec<String>,
    /// App webhooks (off unless `webhooks.target_url` is set).
    pub webhooks: HubspotWebhookOptions,
}

impl Default for HubspotSimOptions {
    fn default() -> Self {
        HubspotSimOptions {
            token: "pat-na1-00000000-0000-4000-8000-000000000000".into(),
            api_version: "v3".into(),
            rate_limit_per_10s: Some(190),
            daily_limit: Some(1_000_000),
            search_per_second: Some(4),
            search_index_delay: Duration::ZERO,
            latency: Duration::ZERO,
            search_max_limit: 200,
            search_max_results: 10_000,
            search_max_filter_groups: 5,
            search_max_filters_per_group: 6,
            search_max_filters_total: 18,
            extra_properties: Vec::new(),
            webhooks: HubspotWebhookOptions::default(),
        }
    }
}

impl HubspotSimOptions {
    /// Defaults with every rate limit switched off, for benchmarks.
    pub fn unlimited() -> Self {
        HubspotSimOptions {
            rate_limit_per_10s: None,
            daily_limit: None,
            search_per_second: None,
            ..HubspotSimOptions::default()
        }
    }
}

/// A failure to inject into the next API calls (authenticated calls only; UI methods on the
/// handle are never affected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The next `count` API calls answer `status` (500, 502, 503, ...) with a HubSpot-shaped
    /// JSON error body and change nothing. They use quota like any call.
    ServerError { status: u16, count: u32 },
    /// The next `count` API calls answer 429 with `policyName: TEN_SECONDLY_ROLLING`.
    RateLimited { count: u32 },
    /// The next batch write (`batch/create`, `batch/update`, `batch/upsert`, and the
    /// communication preferences `batch/unsubscribe-all`) with an input whose
    /// id or email equals `key` (case-insensitively) fails that input alone: the batch answers
    /// 207 with an `INTERNAL_ERROR` entry whose `context.ids` holds `key`, and the other inputs
    /// are applied. The fault is used up by that batch.
    FailBatchInput { key: String },
}

/// Counters of what the simulator saw. Each HTTP call that passed authentication and the rate
/// limits counts once in `api_reads`, `api_writes` or `search_calls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    pub api_reads: u64,
    pub api_writes: u64,
    pub search_calls: u64,
    /// Calls answered 429 (real limits and injected ones).
    pub rate_limited: u64,
    /// Calls answered with any status of 400 or more.
    pub errors_returned: u64,
    /// Contacts created through the API (not through `insert`).
    pub records_created: u64,
    /// Contacts changed through the API (a write that changed nothing does not count).
    pub records_updated: u64,
    /// Webhook POSTs sent (first tries and retries).
    pub webhook_requests_sent: u64,
    /// Webhook POSTs answered 2xx.
    pub webhook_requests_succeeded: u64,
    /// Webhook attempts that failed (non-2xx, timeout, connection failure).
    pub webhook_failed_attempts: u64,
    /// Events given up on after the tenth retry.
    pub webhook_events_dropped: u64,
    /// Events queued now (waiting for their batch, in flight, or between retries).
    pub webhook_events_queued: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    api_reads: AtomicU64,
    api_writes: AtomicU64,
    search_calls: AtomicU64,
    rate_limited: AtomicU64,
    errors_returned: AtomicU64,
    records_created: AtomicU64,
    records_updated: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub(crate) struct Faults {
    /// (status, calls left), served in order.
    server_errors: Vec<(u16, u32)>,
    rate_limited: u32,
    /// Lower-cased keys of batch inputs to fail once.
    batch_inputs: Vec<String>,
}

pub(crate) struct Inner {
    opts: HubspotSimOptions,
    store: Mutex<Store>,
    /// Deals and their contacts; never locked together with `store`.
    deals: Mutex<deals::DealStore>,
    limits: Mutex<server::RateState>,
    faults: Mutex<Faults>,
    counters: Counters,
    addr: OnceLock<SocketAddr>,
    hooks: hooks::Hooks,
    /// Set by [`HubspotSim::stop`]: ends the server task.
    stop: tokio::sync::watch::Sender<bool>,
}

/// The store lock, tagged with who is writing. Changes committed while it is held become
/// webhook events when it is released, still under the lock, so events are queued in commit
/// order and never for a write that another caller made.
pub(crate) struct StoreGuard<'a> {
    guard: MutexGuard<'a, Store>,
    inner: &'a Inner,
    source: ChangeSource,
}

impl Deref for StoreGuard<'_> {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.guard
    }
}

impl DerefMut for StoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Store {
        &mut self.guard
    }
}

impl Drop for StoreGuard<'_> {
    fn drop(&mut self) {
        if !self.guard.changes.is_empty() {
            let changes = std::mem::take(&mut self.guard.changes);
            self.inner.hooks.emit(changes, self.source);
        }
    }
}

impl Inner {
    /// The store, for API handlers. The store lock is never held across an await; a poisoned
    /// lock means a handler panicked mid-write, and the simulator keeps serving what is there.
    fn store(&self) -> StoreGuard<'_> {
        self.store_as(ChangeSource::Api)
    }

    fn store_as(&self, source: ChangeSource) -> StoreGuard<'_> {
        let guard = self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        StoreGuard { guard, inner: self, source }
    }

    fn deal_store(&self) -> MutexGuard<'_, deals::DealStore> {
        self.deals.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn limits(&self) -> MutexGuard<'_, server::RateState> {
        self.limits.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Handle on one simulated HubSpot portal; clones share it.
#[derive(Clone)]
pub struct HubspotSim {
    inner: Arc<Inner>,
}

impl HubspotSim {
    pub fn new(opts: HubspotSimOptions) -> HubspotSim {
        let store = Store::new(&opts);
        let hooks = hooks::Hooks::new(opts.webhooks.clone(), &opts.extra_properties);
        HubspotSim {
            inner: Arc::new(Inner {
                hooks,
                stop: tokio::sync::watch::channel(false).0,
                opts,
                store: Mutex::new(store),
                deals: Mutex::new(deals::DealStore::default()),
                limits: Mutex::new(server::RateState::default()),
                faults: Mutex::new(Faults::default()),
                counters: Counters::default(),
                addr: OnceLock::new(),
            }),
        }
    }

    /// The axum router serving this portal's API (for `oneshot` tests or mounting elsewhere).
    pub fn router(&self) -> axum::Router {
        server::router(Arc::clone(&self.inner))
    }

    /// Bind `addr` (e.g. `127.0.0.1:0`) and serve the API from a spawned task until
    /// [`HubspotSim::stop`] or the runtime stops. Call once per handle; [`HubspotSim::base_url`] reports the first bound address.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(&self, addr: &str) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let _ = self.inner.addr.set(local);
        let app = self.router();
        let mut stop = self.inner.stop.subscribe();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                tracing::warn!(error = %error, "hubspot simulator stopped serving");
            }
        });
        Ok(local)
    }

    /// `http://127.0.0.1:PORT` once [`HubspotSim::start`] has bound; empty before.
    pub fn base_url(&self) -> String {
        self.inner.addr.get().map(|addr| format!("http://{addr}")).unwrap_or_default()
    }

    /// Create a contact as an import or a person in the UI would (not counted as an API call).
    /// Same validation as the API; returns the new id.
    ///
    /// # Errors
    /// A message naming the property at fault, or the existing id on a duplicate email.
    pub fn insert(&self, properties: BTreeMap<String, String>) -> Result<String, String> {
        let mut store = self.inner.store_as(ChangeSource::CrmUi);
        let props =
            properties.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        let now = store::now_ms();
        store.create(&props, now).map(|id| id.to_string()).map_err(|e| e.describe())
    }

    /// Edit a contact as a person in the UI would (not counted); the UI may move
    /// `lifecyclestage` backwards. `id` may be a merged-away id.
    ///
    /// # Errors
    /// Unknown id, invalid or read-only property, or an email held by another contact.
    pub fn ui_update(&self, id: &str, properties: BTreeMap<String, String>) -> Result<(), String> {
        let mut store = self.inner.store_as(ChangeSource::CrmUi);
        let id = store.resolve(id, false).ok_or_else(|| WriteError::NotFound.describe())?;
        let props =
            properties.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        let now = store::now_ms();
        store.update(id, &props, false, now).map(|_| ()).map_err(|e| e.describe())
    }

    /// A person unsubscribing through an email footer link: the address is unsubscribed from all
    /// email and its contact gets `hs_email_optout = "true"`.
    pub fn ui_unsubscribe(&self, email: &str) {
        let mut store = self.inner.store_as(ChangeSource::CrmUi);
        let now = store::now_ms();
        store.unsubscribe_all(email, now);
    }

    /// Create a deal as a person in the UI would (not counted), in the default pipeline unless
    /// `pipeline` is given; writable properties: `dealname, amount, dealstage, pipeline,
    /// closedate, deal_currency_code`. Returns the id.
    ///
    /// # Errors
    /// A property that is not writable, an unknown stage, a malformed amount or date.
    pub fn create_deal(&self, properties: BTreeMap<String, String>) -> Result<String, String> {
        self.inner.deal_store().create(&properties).map(|id| id.to_string())
    }

    /// Edit a deal as in the UI; moves `hs_lastmodifieddate`.
    ///
    /// # Errors
    /// Unknown or archived deal, or an invalid property as for [`HubspotSim::create_deal`].
    pub fn update_deal(
        &self,
        id: &str,
        properties: BTreeMap<String, String>,
    ) -> Result<(), String> {
        let id: u64 = id.parse().map_err(|_| "deal not found".to_owned())?;
        self.inner.deal_store().update(id, &properties)
    }

    /// Associate a contact with a deal (`on`) or remove the association; a change moves the
    /// deal's `hs_lastmodifieddate` (see `deals.rs`).
    ///
    /// # Errors
    /// Unknown deal or contact.
    pub fn associate_deal(&self, deal_id: &str, contact_id: &str, on: bool) -> Result<(), String> {
        let contact = {
            let store = self.inner.store_as(ChangeSource::CrmUi);
            store.resolve(contact_id, false).ok_or_else(|| WriteError::NotFound.describe())?
        };
        let deal: u64 = deal_id.parse().map_err(|_| "deal not found".to_owned())?;
        self.inner.deal_store().associate(deal, contact, on)
    }

    /// Archive (delete) a deal as in the UI; false when unknown or already archived.
    pub fn archive_deal(&self, id: &str) -> bool {
        id.parse().is_ok_and(|id| self.inner.deal_store().archive(id))
    }

    /// A form submission (or another conversion event) by a contact, recorded the way HubSpot
    /// analytics does: see `deals.rs`. `source` sets `hs_analytics_source` when the contact
    /// has none yet. `at` is the submission time (epoch ms; now when `None`).
    ///
    /// # Errors
    /// Unknown contact.
    pub fn submit_form(
        &self,
        contact_id: &str,
        event_name: &str,
        source: Option<&str>,
        at: Option<i64>,
    ) -> Result<(), String> {
        let mut store = self.inner.store_as(ChangeSource::CrmUi);
        let id = store.resolve(contact_id, false).ok_or_else(|| WriteError::NotFound.describe())?;
        let now = store::now_ms();
        store.record_conversion(
            id,
            event_name,
            source.unwrap_or("OFFLINE"),
            at.unwrap_or(now),
            now,
        );
        Ok(())
    }

    /// A rep logging a call, meeting or sales email on a contact in the UI, as having
    /// happened at `at` (epoch ms; now when `None`): HubSpot moves the contact's read-only
    /// `notes_last_contacted` to it when it is later than the value held (a note does not:
    /// "last contacted" counts contacts, not notes). Returns whether it moved.
    ///
    /// # Errors
    /// Unknown contact.
    pub fn log_engagement(&self, contact_id: &str, at: Option<i64>) -> Result<bool, String> {
        let mut store = self.inner.store_as(ChangeSource::CrmUi);
        let id = store.resolve(contact_id, false).ok_or_else(|| WriteError::NotFound.describe())?;
        let now = store::now_ms();
        Ok(store.record_contact(id, at.unwrap_or(now), now))
    }

    /// HubSpot updating a contact on its own (e.g. a recalculated internal property): moves
    /// `lastmodifieddate`/`updatedAt` with no visible property change. Returns false for an
    /// unknown id.
    pub fn internal_touch(&self, id: &str) -> bool {
        let mut store = self.inner.store_as(ChangeSource::CrmUi);
        match store.resolve(id, false) {
            Some(id) => {
                store.touch(id, store::now_ms());
                true
            }
            None => false,
        }
    }

    /// Merge `merged` into `primary` as a person in the UI would: the same as
    /// `POST /crm/v3/objects/contacts/merge`, with `changeSource: CRM_UI` on its webhooks.
    ///
    /// # Errors
    /// Unknown or archived ids, or both naming one contact.
    pub fn ui_merge(&self, primary: &str, merged: &str) -> Result<(), String> {
        let mut store = self.inner.store_as(ChangeSource::CrmUi);
        let p = store.resolve(primary, false).ok_or_else(|| WriteError::NotFound.describe())?;
        let m = store.resolve(merged, false).ok_or_else(|| WriteError::NotFound.describe())?;
        if p == m {
            return Err("Cannot merge a contact with itself".into());
        }
        store.merge(p, m, store::now_ms()).map(|_| ()).map_err(|e| e.describe())
    }

    /// Archive (delete to the recycle bin) a contact as a person in the UI would; sends
    /// `contact.deletion`. Returns false when the id names no live contact.
    pub fn ui_archive(&self, id: &str) -> bool {
        let mut store = self.inner.store_as(ChangeSource::CrmUi);
        match store.resolve(id, false) {
            Some(id) => store.archive(id, store::now_ms()),
            None => false,
        }
    }

    /// Restore an archived contact from the recycle bin, as the UI allows for 90 days; sends
    /// `contact.restore`.
    ///
    /// # Errors
    /// Unknown id, a contact that is not archived or was archived over 90 days ago, or an
    /// email another live contact holds now.
    pub fn ui_restore(&self, id: &str) -> Result<(), String> {
        let mut store = self.inner.store_as(ChangeSource::CrmUi);
        let id: u64 = id.trim().parse().map_err(|_| format!("{id:?} is not a contact id"))?;
        store.restore(id, store::now_ms())
    }

    /// Erase a contact for good, archived or not (a GDPR delete); sends
    /// `contact.privacyDeletion`. Returns false for an unknown id.
    pub fn gdpr_delete(&self, id: &str) -> bool {
        let mut store = self.inner.store_as(ChangeSource::CrmUi);
        let Ok(id) = id.trim().parse::<u64>() else { return false };
        store.gdpr_delete(id, store::now_ms())
    }

    /// Whether a GDPR delete by email blocklisted this address (no contact held it).
    pub fn is_blocklisted(&self, email: &str) -> bool {
        self.inner.store().is_blocklisted(email)
    }

    /// Every known property of a contact (unset ones as `None`), whether archived or not;
    /// merged-away ids resolve to the surviving contact.
    pub fn get(&self, id: &str) -> Option<BTreeMap<String, Option<String>>> {
        let store = self.inner.store();
        store.snapshot(id)
    }

    /// Every non-archived contact with all its properties, by id ascending.
    pub fn all(&self) -> Vec<(String, BTreeMap<String, Option<String>>)> {
        self.inner.store().all()
    }

    /// Queue a failure for the next API calls; see [`Fault`].
    pub fn inject(&self, fault: Fault) {
        let mut faults = self.inner.faults();
        match fault {
            Fault::ServerError { status, count } if count > 0 => {
                faults.server_errors.push((status, count));
            }
            Fault::ServerError { .. } => {}
            Fault::RateLimited { count } => faults.rate_limited += count,
            Fault::FailBatchInput { key } => faults.batch_inputs.push(key.trim().to_lowercase()),
        }
    }

    pub fn stats(&self) -> SimStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let hooks = self.inner.hooks.stats();
        SimStats {
            api_reads: get(&c.api_reads),
            api_writes: get(&c.api_writes),
            search_calls: get(&c.search_calls),
            rate_limited: get(&c.rate_limited),
            errors_returned: get(&c.errors_returned),
            records_created: get(&c.records_created),
            records_updated: get(&c.records_updated),
            webhook_requests_sent: hooks.requests_sent,
            webhook_requests_succeeded: hooks.requests_succeeded,
            webhook_failed_attempts: hooks.failed_attempts,
            webhook_events_dropped: hooks.items_dropped,
            webhook_events_queued: hooks.items_queued,
        }
    }

    /// Point app webhooks at `url` (`None` switches them off), as the developer portal or
    /// `PUT /webhooks/v3/{appId}/settings` would. Changes made while there is no target are
    /// not sent later; events already queued go to the new target.
    pub fn set_webhook_target(&self, url: Option<String>) {
        self.inner.hooks.set_target(url);
    }

    /// The app's webhook settings as configured at construction (the target and concurrency
    /// may since have changed through [`HubspotSim::set_webhook_target`] or the API).
    pub fn webhook_options(&self) -> &HubspotWebhookOptions {
        &self.inner.opts.webhooks
    }

    /// Stop serving and stop webhook delivery (queued events are abandoned). Idempotent.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
        self.inner.hooks.stop();
    }
}
