//! The running daemon: pollers → inbox → reconciler → ledger → outbox → pushers, per
//! configured system, until shutdown.
//!
//! Every ledger call runs on a blocking thread (SQLite is synchronous); the ledger's one
//! connection is the one writer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::connectors::hubspot::HubspotConnector;
use crate::connectors::salesforce::SalesforceConnector;
use crate::connectors::{AnyConnector, ApiCallCounts, Connector, ConnectorError, Cursor};
use crate::domain::{PushOp, SystemName};
use crate::ingest::sink::NoticeSink;
use crate::ingest::webhook::server::{
    Receiver, ReceiverKind, ServerConfig, SnapshotFn, WebhookState, WebhookStats,
};
use crate::ledger::{Ledger, LedgerError, PushRetry};
use crate::reconcile::{Rules, SystemRules};
use crate::settings::{ConnectorSettings, Settings, SyncSettings, SystemWebhook, WebhookSettings};
use crate::shutdown::Shutdown;

/// Build the connector a system's settings describe.
///
/// # Errors
/// The connector cannot be built (e.g. its HTTP client).
pub fn build_connector(
    s: &crate::settings::SystemSettings,
) -> Result<AnyConnector, ConnectorError> {
    Ok(match &s.connector {
        ConnectorSettings::Salesforce(c) => {
            AnyConnector::Salesforce(SalesforceConnector::new(c.clone())?)
        }
        ConnectorSettings::Hubspot(c) => AnyConnector::Hubspot(HubspotConnector::new(c.clone())?),
    })
}

/// The reconciliation rules the settings describe (builds each connector's field map).
///
/// # Errors
/// A connector cannot be built.
pub fn rules_for(settings: &Settings) -> Result<Rules, ConnectorError> {
    let mut systems = Vec::new();
    for s in &settings.systems {
        let connector = build_connector(s)?;
        systems.push(system_rules(s, &connector));
    }
    Ok(rules_with(settings, systems))
}

/// The rules of these systems under the settings' field rules and matching.
fn rules_with(settings: &Settings, systems: Vec<SystemRules>) -> Rules {
    Rules {
        systems,
        status_implies_stage: settings.sync.status_implies_stage.clone(),
        field_rules: settings.identity.field_rules.clone(),
        recreate_deleted: settings.identity.recreate_deleted,
        review_holds_creates: settings.identity.review_holds_creates,
        matcher: settings.identity.matcher.clone(),
        contract: settings.contract.clone().map(Arc::new),
    }
}

fn system_rules(s: &crate::settings::SystemSettings, connector: &AnyConnector) -> SystemRules {
    let unique_email = matches!(connector, AnyConnector::Hubspot(_));
    let (map, object_type, other_maps) = match connector {
        AnyConnector::Salesforce(c) => (
            c.field_map().clone(),
            "Lead".to_string(),
            c.object_maps().into_iter().filter(|(o, _)| o != "Lead").collect(),
        ),
        AnyConnector::Hubspot(c) => {
            (c.field_map().clone(), "contact".to_string(), std::collections::BTreeMap::new())
        }
    };
    SystemRules {
        name: s.name.clone(),
        role: s.role,
        object_type,
        create: s.create,
        map,
        other_maps,
        unique_email,
    }
}

/// One configured system at run time.
pub struct SystemHandle {
    pub name: SystemName,
    pub connector: AnyConnector,
    /// How its webhooks are verified; `None`: polled only.
    webhook: Option<crate::settings::SystemWebhook>,
    push_wake: Notify,
    /// Rung when webhook notices for this system were committed.
    fetch_wake: Notify,
    /// Rung by the pusher when creates wait for a read of this system: poll now rather than
    /// after the interval (or the webhook sweep).
    poll_wake: Notify,
}

/// What the engine has done so far, for progress bars, the demo summary and convergence.
#[derive(Debug, Default)]
pub struct Progress {
    pub polled: BTreeMap<SystemName, AtomicU64>,
    pub pushed_created: BTreeMap<SystemName, AtomicU64>,
    pub pushed_updated: BTreeMap<SystemName, AtomicU64>,
    pub dead: BTreeMap<SystemName, AtomicU64>,
    pub reconciled: AtomicU64,
    /// Systems whose latest poll page was full: a backfill is under way.
    backfilling: BTreeMap<SystemName, std::sync::atomic::AtomicBool>,
    /// When the newest poll that found nothing more to read started, per system.
    caught_up_at: Mutex<BTreeMap<SystemName, Instant>>,
    /// The same on the wall clock, which the ledger's timestamps use.
    caught_up_wall: Mutex<BTreeMap<SystemName, chrono::DateTime<Utc>>>,
    /// When the newest push round finished.
    last_push_at: Mutex<Option<Instant>>,
    /// Push rounds under way (a call may be retrying a vendor's 5xx for a second or more).
    pushing: AtomicU64,
}

/// Counts a push round as under way until dropped (also on an early return).
struct Pushing<'a>(&'a AtomicU64);

impl<'a> Pushing<'a> {
    fn start(n: &'a AtomicU64) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Pushing(n)
    }
}

impl Drop for Pushing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn bump(map: &BTreeMap<SystemName, AtomicU64>, name: &SystemName, n: u64) {
    if let Some(c) = map.get(name) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

pub fn count(map: &BTreeMap<SystemName, AtomicU64>, name: &SystemName) -> u64 {
    map.get(name).map(|c| c.load(Ordering::Relaxed)).unwrap_or(0)
}

impl Progress {
    /// Whether this system's poller has read to the end at least once since start.
    pub fn caught_up_once(&self, name: &SystemName) -> bool {
        self.caught_up_at.lock().is_ok_and(|g| g.contains_key(name))
    }

    /// When the newest complete read of this system started (its last page's request, wall
    /// clock): every record it held before then has been read.
    pub fn caught_up_wall(&self, name: &SystemName) -> Option<chrono::DateTime<Utc>> {
        self.caught_up_wall.lock().ok().and_then(|g| g.get(name).copied())
    }

    /// When the newest complete read of *every* system started (the oldest of their
    /// [`Progress::caught_up_wall`]s); `None` until each has been read through once. A create
    /// is cleared by this, not by its own system's read alone: a change read in another system
    /// can make a record already there the person's (an edit that makes a hand-made duplicate
    /// match, convergence seed 205; a converted contact whose lead's conversion is read after
    /// it, seed 394), and creating before that change is read makes a second record.
    pub fn read_through_wall(&self) -> Option<chrono::DateTime<Utc>> {
        let g = self.caught_up_wall.lock().ok()?;
        if g.len() < self.polled.len() {
            return None;
        }
        g.values().min().copied()
    }

    /// Whether some system is still being read page after page.
    pub fn backfilling(&self) -> bool {
        self.backfilling.values().any(|b| b.load(Ordering::Relaxed))
    }

    fn set_backfilling(&self, name: &SystemName, on: bool) {
        if let Some(b) = self.backfilling.get(name) {
            b.store(on, Ordering::Relaxed);
        }
    }

    fn new(names: &[SystemName]) -> Progress {
        let m = || names.iter().map(|n| (n.clone(), AtomicU64::new(0))).collect();
        Progress {
            polled: m(),
            pushed_created: m(),
            pushed_updated: m(),
            dead: m(),
            backfilling: names
                .iter()
                .map(|n| (n.clone(), std::sync::atomic::AtomicBool::new(true)))
                .collect(),
            ..Progress::default()
        }
    }

    /// Every system has been polled to its end by a pass that started after `since` and after
    /// the last push finished, and no push is under way, so whatever changed before and
    /// whatever leadsync wrote has been read back. (A push in flight counts: its outbox row
    /// may be gone already, replanned away by a read that showed the value it writes, and
    /// its call still lands; convergence seed 760.)
    pub fn polled_through_since(&self, since: Instant) -> bool {
        if self.pushing.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let last_push = self.last_push_at.lock().map(|g| *g).unwrap_or(None);
        let last_push = Some(last_push.map_or(since, |p| p.max(since)));
        let caught = match self.caught_up_at.lock() {
            Ok(g) => g.clone(),
            Err(_) => return false,
        };
        if caught.len() < self.polled.len() {
            return false;
        }
        caught.values().all(|t| last_push.is_none_or(|p| *t > p))
    }
}

/// The sync engine for one set of systems.
pub struct App {
    ledger: Arc<Ledger>,
    systems: Vec<Arc<SystemHandle>>,
    rules: Arc<Rules>,
    sync: SyncSettings,
    webhooks: WebhookSettings,
    /// Bound by [`App::bind_webhooks`] (or at start), taken when the listener starts serving.
    webhook_listener: Mutex<Option<tokio::net::TcpListener>>,
    webhook_stats: Mutex<Option<Arc<WebhookStats>>>,
    progress: Arc<Progress>,
    reconcile_wake: Arc<Notify>,
    merger: crate::merger::MergerSettings,
    closed_loop: crate::closed_loop::ClosedLoopSettings,
}

impl App {
    /// Open the ledger and build every connector.
    ///
    /// # Errors
    /// The ledger cannot be opened or a connector cannot be built.
    pub fn build(settings: &Settings) -> anyhow::Result<App> {
        let ledger = Ledger::open(&settings.ledger_path)
            .with_context(|| format!("cannot open ledger {}", settings.ledger_path.display()))?;
        ledger.set_review_holds_creates(settings.identity.review_holds_creates);
        let mut systems = Vec::new();
        let mut rules = Vec::new();
        for s in &settings.systems {
            let connector = build_connector(s)?;
            rules.push(system_rules(s, &connector));
            systems.push(Arc::new(SystemHandle {
                name: s.name.clone(),
                connector,
                webhook: s.webhook.clone(),
                push_wake: Notify::new(),
                fetch_wake: Notify::new(),
                poll_wake: Notify::new(),
            }));
        }
        ledger
            .register_systems(
                &settings
                    .systems
                    .iter()
                    .map(|s| (s.name.to_string(), s.kind.to_string(), s.role.to_string()))
                    .collect::<Vec<_>>(),
            )
            .context("cannot register systems in the ledger")?;
        let names: Vec<SystemName> = systems.iter().map(|s| s.name.clone()).collect();
        Ok(App {
            ledger: Arc::new(ledger),
            systems,
            rules: Arc::new(rules_with(settings, rules)),
            sync: settings.sync.clone(),
            webhooks: settings.webhooks.clone(),
            webhook_listener: Mutex::new(None),
            webhook_stats: Mutex::new(None),
            progress: Arc::new(Progress::new(&names)),
            reconcile_wake: Arc::new(Notify::new()),
            merger: crate::merger::MergerSettings::from_settings(settings),
            closed_loop: settings.closed_loop.clone(),
        })
    }

    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    pub fn ledger(&self) -> Arc<Ledger> {
        Arc::clone(&self.ledger)
    }

    pub fn rules(&self) -> Arc<Rules> {
        Arc::clone(&self.rules)
    }

    /// Bind the webhook listener where the settings say (port 0 picks a free port), so that
    /// its address is known before [`App::run_until_stopped`] serves it. `None` when webhooks
    /// are disabled or no system has a `webhook` table.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind_webhooks(&self) -> std::io::Result<Option<std::net::SocketAddr>> {
        let Some(addr) = self.webhooks.listen else { return Ok(None) };
        if !self.systems.iter().any(|s| s.webhook.is_some()) {
            return Ok(None);
        }
        if let Some(l) = self.webhook_listener.lock().ok().as_ref().and_then(|g| g.as_ref()) {
            return l.local_addr().map(Some);
        }
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        if let Ok(mut g) = self.webhook_listener.lock() {
            *g = Some(listener);
        }
        Ok(Some(local))
    }

    /// What the webhook listener has done, once it runs.
    pub fn webhook_stats(&self) -> Option<Arc<WebhookStats>> {
        self.webhook_stats.lock().ok().and_then(|g| g.clone())
    }

    /// Whether this system is fed by webhooks (and polled only as a safety net).
    fn webhook_fed(&self, sys: &SystemHandle) -> bool {
        sys.webhook.is_some() && self.webhooks.listen.is_some()
    }

    /// Each system's live API call counters, for the metrics endpoint.
    pub fn api_counters(&self) -> Vec<(String, Arc<crate::connectors::ApiCounters>)> {
        self.systems.iter().map(|s| (s.name.to_string(), s.connector.counters())).collect()
    }

    /// API calls each connector made so far.
    pub fn api_calls(&self) -> BTreeMap<SystemName, ApiCallCounts> {
        self.systems.iter().map(|s| (s.name.clone(), s.connector.counters().snapshot())).collect()
    }

    /// Authenticate and make one read against every system.
    pub async fn healthcheck(&self) -> Vec<(SystemName, Result<(), ConnectorError>)> {
        let mut out = Vec::new();
        for s in &self.systems {
            out.push((s.name.clone(), s.connector.healthcheck().await));
        }
        out
    }

    /// Run until `shutdown` fires, then let every task finish its batch in flight and return.
    ///
    /// # Errors
    /// A task failed in a way that leaves the daemon unable to work (the ledger unusable).
    pub async fn run_until_stopped(&self, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut tasks = JoinSet::new();
        let committer = self.start_webhooks(&mut tasks, &shutdown).await?;
        for sys in &self.systems {
            let span = tracing::info_span!("poller", system = %sys.name);
            let sweep = self.webhook_fed(sys).then_some(self.webhooks.sweep_interval);
            tasks.spawn(
                poller(
                    Arc::clone(sys),
                    Arc::clone(&self.ledger),
                    Arc::clone(&self.progress),
                    Arc::clone(&self.reconcile_wake),
                    self.sync.error_backoff,
                    sweep,
                    shutdown.clone(),
                )
                .instrument(span),
            );
            // Every system has a fetch stage: it turns webhook notices into changes, and reads
            // again the records the reconciler asks about (a state read while a push to the
            // record was in flight; see `reconcile::reread_needed`).
            {
                let span = tracing::info_span!("fetcher", system = %sys.name);
                tasks.spawn(
                    fetcher(
                        Arc::clone(sys),
                        Arc::clone(&self.ledger),
                        Arc::clone(&self.reconcile_wake),
                        self.sync.error_backoff,
                        shutdown.clone(),
                    )
                    .instrument(span),
                );
            }
            let span = tracing::info_span!("pusher", system = %sys.name);
            tasks.spawn(
                pusher(
                    Arc::clone(sys),
                    self.systems.clone(),
                    Arc::clone(&self.ledger),
                    Arc::clone(&self.rules),
                    Arc::clone(&self.progress),
                    self.sync.clone(),
                    shutdown.clone(),
                )
                .instrument(span),
            );
        }
        tasks.spawn(
            reconciler(
                Arc::clone(&self.ledger),
                Arc::clone(&self.rules),
                self.systems.clone(),
                Arc::clone(&self.progress),
                Arc::clone(&self.reconcile_wake),
                Pace {
                    batch: self.sync.reconcile_batch,
                    budget: Some(if committer.is_some() {
                        RECONCILE_BUDGET_WITH_WEBHOOKS
                    } else {
                        RECONCILE_BUDGET
                    }),
                },
                shutdown.clone(),
            )
            .instrument(tracing::info_span!("reconciler")),
        );
        crate::merger::spawn(&mut tasks, &self.merger, &self.systems, &self.ledger, &shutdown);
        crate::sla::spawn(&mut tasks, &self.ledger, &self.rules, &shutdown);
        crate::reevaluate::spawn(&mut tasks, &self.ledger, &self.rules, &shutdown);
        crate::closed_loop::spawn(
            &mut tasks,
            &self.closed_loop,
            &self.ledger,
            &self.systems,
            |s| (&s.name, &s.connector),
            &shutdown,
        );
        let mut first_error = None;
        while let Some(res) = tasks.join_next().await {
            let err = match res {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(join) => anyhow::anyhow!("task panicked: {join}"),
            };
            tracing::error!(error = %format!("{err:#}"), "sync task stopped; shutting down");
            first_error.get_or_insert(err);
            // One part cannot work without the others: stop them all.
            tasks.abort_all();
        }
        // The listener has answered its last request; the committer has nothing left to store.
        if let Some(handle) = committer {
            let joined = tokio::task::spawn_blocking(move || handle.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("webhook committer ended abnormally");
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Start the webhook listener and its committer, when configured. Returns the committer
    /// thread, which ends once the listener (the last holder of the sink) has stopped.
    async fn start_webhooks(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
        let Some(addr) = self.bind_webhooks().await.context("cannot bind webhooks.listen")? else {
            return Ok(None);
        };
        let Some(listener) = self.webhook_listener.lock().ok().and_then(|mut g| g.take()) else {
            return Ok(None);
        };
        let systems = self.systems.clone();
        let on_stored: crate::ingest::sink::OnStored = Arc::new(move |name: &SystemName| {
            if let Some(s) = systems.iter().find(|s| &s.name == name) {
                s.fetch_wake.notify_one();
            }
        });
        let (sink, committer) = NoticeSink::start(Arc::clone(&self.ledger), on_stored)
            .context("cannot start the webhook committer")?;
        let receivers = self.systems.iter().filter_map(receiver_for).collect();
        let state = WebhookState::new(
            receivers,
            sink,
            ServerConfig {
                public_url: self.webhooks.public_url.clone(),
                max_body_bytes: self.webhooks.max_body_bytes,
            },
        );
        if let Ok(mut g) = self.webhook_stats.lock() {
            *g = Some(state.stats());
        }
        tracing::info!(listen = %addr, "webhook listener up");
        let shutdown = shutdown.clone();
        tasks.spawn(
            async move {
                crate::ingest::webhook::server::serve(listener, state, shutdown)
                    .await
                    .context("webhook listener failed")
            }
            .instrument(tracing::info_span!("webhooks")),
        );
        Ok(Some(committer))
    }
}

/// The webhook receiver of one system, if it takes webhooks.
fn receiver_for(sys: &Arc<SystemHandle>) -> Option<Receiver> {
    let kind = match (sys.webhook.as_ref()?, &sys.connector) {
        (SystemWebhook::Hubspot(cfg), _) => ReceiverKind::Hubspot(cfg.clone()),
        (SystemWebhook::Salesforce { config, secret }, AnyConnector::Salesforce(_)) => {
            let handle = Arc::clone(sys);
            let snapshot: SnapshotFn = Arc::new(move |n, now| match &handle.connector {
                AnyConnector::Salesforce(c) => {
                    let fields = n
                        .fields
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_ref().map(|s| s.0.clone())))
                        .collect();
                    c.change_from_notification(&n.object_type, &n.record_id, &fields, now)
                }
                AnyConnector::Hubspot(_) => None,
            });
            ReceiverKind::Salesforce { config: config.clone(), secret: secret.clone(), snapshot }
        }
        (SystemWebhook::Salesforce { .. }, AnyConnector::Hubspot(_)) => return None,
    };
    Some(Receiver { name: sys.name.clone(), kind })
}

/// Processed inbox rows are kept this long for de-duplication, and pruned this often.
const INBOX_KEEP_DAYS: i64 = 7;
const INBOX_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How long a pusher waits at most for a fuller batch while changes are still being reconciled.
const PUSH_LINGER_MAX: Duration = Duration::from_secs(2);
const PUSH_LINGER_STEP: Duration = Duration::from_millis(50);

/// Run a ledger call on a blocking thread (SQLite is synchronous); the one helper every task
/// uses.
pub(crate) async fn blocking<T, F>(ledger: &Arc<Ledger>, f: F) -> Result<T, LedgerError>
where
    T: Send + 'static,
    F: FnOnce(&Ledger) -> Result<T, LedgerError> + Send + 'static,
{
    let l = Arc::clone(ledger);
    match tokio::task::spawn_blocking(move || f(&l)).await {
        Ok(r) => r,
        Err(e) => Err(LedgerError::Corrupt(format!("ledger task failed: {e}"))),
    }
}

/// Wait `d`, or less if shutdown fires. Returns false on shutdown.
async fn idle(shutdown: &mut Shutdown, d: Duration, wake: Option<&Notify>) -> bool {
    tokio::select! {
        () = shutdown.wait() => false,
        () = tokio::time::sleep(d) => true,
        () = async { match wake { Some(n) => n.notified().await, None => std::future::pending().await } } => true,
    }
}

/// When the poll pass under way started: its first page's request. A pass is complete back to
/// then only: its last page may be of another list (HubSpot ends a pass with the archived
/// sweep), started after a record that the pass's search had already gone past was made, so
/// the last page's start would clear a create over a hand-made record not read yet
/// (convergence seeds 270, 367: a duplicate made in the search's wake). A failed page keeps
/// the start: the pass resumes from its cursor.
#[derive(Debug, Default)]
struct Pass {
    started: Option<(Instant, chrono::DateTime<Utc>)>,
}

impl Pass {
    /// A page's request is about to go out at `now`.
    fn page(&mut self, now: (Instant, chrono::DateTime<Utc>)) {
        self.started.get_or_insert(now);
    }

    /// The page just read ended the pass: when the pass started.
    fn complete(&mut self) -> Option<(Instant, chrono::DateTime<Utc>)> {
        self.started.take()
    }
}

async fn poller(
    sys: Arc<SystemHandle>,
    ledger: Arc<Ledger>,
    progress: Arc<Progress>,
    reconcile_wake: Arc<Notify>,
    error_backoff: Duration,
    sweep: Option<Duration>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let name = sys.name.clone();
    // The cursor as committed. The poller is its only writer (`ingest` stores a page's next
    // cursor with the page), so after a commit it knows the value without asking the ledger:
    // reading it took the one writer's lock, which a reconcile transaction holds for up to
    // `RECONCILE_BUDGET`, once per page. Read from the ledger at start and after a failure.
    let mut known: Option<Cursor> = None;
    let mut pass = Pass::default();
    while !shutdown.is_triggered() {
        let cursor = match known.take() {
            Some(c) => c,
            None => {
                let n = name.clone();
                blocking(&ledger, move |l| l.cursor(&n)).await?
            }
        };
        pass.page((Instant::now(), Utc::now()));
        match sys.connector.poll_changes(&cursor).await {
            Ok(page) => {
                let n = name.clone();
                let count = page.changes.len();
                let next = page.next_cursor.clone();
                let changes = page.changes;
                let committed = if next.0.is_some() { next.clone() } else { cursor };
                let inserted = blocking(&ledger, move |l| {
                    let now = Utc::now();
                    let inserted = l.ingest(&n, "poll", &changes, Some(&next), now)?;
                    l.record_poll_ok(&n, now)?;
                    Ok(inserted)
                })
                .await?;
                // `ingest` stores the next cursor only when there is one.
                known = Some(committed);
                bump(&progress.polled, &name, count as u64);
                crate::metrics::records_polled(name.as_str(), count as u64);
                tracing::debug!(records = count, new = inserted, "poll page committed");
                if inserted > 0 {
                    reconcile_wake.notify_one();
                }
                progress.set_backfilling(&name, page.poll_again_after.is_zero());
                if page.poll_again_after.is_zero() {
                    continue;
                }
                // Nothing more to read: note when this complete pass started, once the
                // reconciler has taken everything it produced.
                if let Some((started, started_wall)) = pass.complete() {
                    if let Ok(mut g) = progress.caught_up_at.lock() {
                        g.insert(name.clone(), started);
                    }
                    if let Ok(mut g) = progress.caught_up_wall.lock() {
                        g.insert(name.clone(), started_wall);
                    }
                }
                // Creates held for this read may go now.
                sys.push_wake.notify_one();
                // A system fed by webhooks is still read to its end now and then: the sweep
                // catches whatever a lost or refused delivery missed.
                let wait = sweep.map_or(page.poll_again_after, |s| s.max(page.poll_again_after));
                if !idle(&mut shutdown, wait, Some(&sys.poll_wake)).await {
                    break;
                }
            }
            Err(e) => {
                let code = e.code();
                tracing::warn!(error_code = %code, error = %e, "poll failed");
                let msg = e.to_string();
                let n = name.clone();
                blocking(&ledger, move |l| l.record_error(&n, &msg, Utc::now())).await?;
                let wait = match &e {
                    ConnectorError::RateLimited { retry_after: Some(d) } => (*d).max(error_backoff),
                    ConnectorError::Auth(_) | ConnectorError::Config(_) => error_backoff * 12,
                    _ => error_backoff,
                };
                if !idle(&mut shutdown, wait, None).await {
                    break;
                }
            }
        }
    }
    tracing::debug!("poller stopped");
    Ok(())
}

/// While webhooks are served, one reconcile transaction holds the ledger's one writer for at
/// most about this long, so that acknowledgements (which wait for their commit) stay fast.
const RECONCILE_BUDGET_WITH_WEBHOOKS: Duration = Duration::from_millis(5);
/// Without webhooks the pollers still wait on the one writer, for their cursor and for each
/// page's commit: reconcile transactions of a full batch (seconds in a fuzzy backfill) held
/// the HubSpot poller to about one 100-record page per transaction. A quarter second keeps
/// batches large and the readers moving.
const RECONCILE_BUDGET: Duration = Duration::from_millis(250);

/// Most webhook notices turned into changes per round; several notices often name the same
/// record (HubSpot sends one event per changed property), so this is more than one fetch call.
const NOTICES_PER_ROUND: usize = 500;
/// A notice whose record could not be fetched this many times is given up on; the sweep poll
/// still reads whatever the record holds.
const NOTICE_MAX_ATTEMPTS: i64 = 20;

/// Turn committed webhook notices into inbox changes: use the state a notice carried, or
/// fetch the records' current state in batches. Notices stay pending until their changes are
/// in the inbox, in the same transaction, so a crash loses nothing.
async fn fetcher(
    sys: Arc<SystemHandle>,
    ledger: Arc<Ledger>,
    reconcile_wake: Arc<Notify>,
    error_backoff: Duration,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let name = sys.name.clone();
    let mut failures: u32 = 0;
    while !shutdown.is_triggered() {
        let n = name.clone();
        let pending = blocking(&ledger, move |l| l.pending_notices(&n, NOTICES_PER_ROUND)).await?;
        if pending.is_empty() {
            if !idle(&mut shutdown, Duration::from_secs(1), Some(&sys.fetch_wake)).await {
                break;
            }
            continue;
        }
        let mut changes = Vec::new();
        let mut carried = Vec::new();
        let mut to_fetch: Vec<&crate::ledger::StoredNotice> = Vec::new();
        for p in &pending {
            match &p.notice.snapshot {
                Some(c) => {
                    changes.push(c.clone());
                    carried.push(p.id);
                }
                None => to_fetch.push(p),
            }
        }
        // A merge event names the survivor; the ids merged away are read too, so that their
        // fates (merged into the survivor) reach the ledger.
        let mut ids: Vec<crate::domain::RemoteId> = to_fetch
            .iter()
            .flat_map(|p| {
                let obj = p.notice.remote.object_type.clone();
                std::iter::once(p.notice.remote.clone()).chain(p.notice.related.iter().map(
                    move |id| crate::domain::RemoteId { object_type: obj.clone(), id: id.clone() },
                ))
            })
            .collect();
        ids.sort();
        ids.dedup();
        let fetched = if ids.is_empty() { Ok(Vec::new()) } else { sys.connector.fetch(&ids).await };
        let (found, not_found, wait) = match fetched {
            Ok(fetched) => {
                failures = 0;
                let got: std::collections::HashSet<&str> =
                    fetched.iter().map(|c| c.remote.id.as_str()).collect();
                let (hit, miss): (Vec<&crate::ledger::StoredNotice>, Vec<_>) =
                    to_fetch.iter().partition(|p| got.contains(p.notice.remote.id.as_str()));
                changes.extend(fetched.iter().cloned());
                let mut found = carried;
                found.extend(hit.iter().map(|p| p.id));
                (found, miss.iter().map(|p| p.id).collect::<Vec<_>>(), None)
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let code = e.code();
                tracing::warn!(error_code = %code, error = %e, notices = to_fetch.len(), "fetch for webhook notices failed");
                let msg = e.to_string();
                let n = name.clone();
                // Notices tried too often are let go (the sweep still reads those records);
                // the rest count one more attempt and wait.
                let (give_up, retry): (Vec<&crate::ledger::StoredNotice>, Vec<_>) =
                    to_fetch.iter().partition(|p| p.attempts + 1 >= NOTICE_MAX_ATTEMPTS);
                let retry: Vec<i64> = retry.iter().map(|p| p.id).collect();
                blocking(&ledger, move |l| {
                    l.notices_failed(&retry)?;
                    l.record_error(&n, &msg, Utc::now())
                })
                .await?;
                let wait = match &e {
                    ConnectorError::RateLimited { retry_after: Some(d) } => (*d).max(error_backoff),
                    ConnectorError::Auth(_) | ConnectorError::Config(_) => error_backoff * 12,
                    _ => error_backoff * failures.min(12),
                };
                (carried, give_up.iter().map(|p| p.id).collect(), Some(wait))
            }
        };
        if !found.is_empty() || !not_found.is_empty() {
            let n = name.clone();
            let inserted = blocking(&ledger, move |l| {
                l.complete_notices(&n, &found, &not_found, &changes, Utc::now())
            })
            .await?;
            tracing::debug!(new_changes = inserted, "webhook notices completed");
            if inserted > 0 {
                reconcile_wake.notify_one();
            }
        }
        if let Some(wait) = wait
            && !idle(&mut shutdown, wait, None).await
        {
            break;
        }
    }
    tracing::debug!("fetcher stopped");
    Ok(())
}

/// How much one reconcile transaction may take: changes, and time when someone waits.
#[derive(Debug, Clone, Copy)]
struct Pace {
    batch: usize,
    budget: Option<Duration>,
}

async fn reconciler(
    ledger: Arc<Ledger>,
    rules: Arc<Rules>,
    systems: Vec<Arc<SystemHandle>>,
    progress: Arc<Progress>,
    wake: Arc<Notify>,
    pace: Pace,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let Pace { batch, budget } = pace;
    let mut last_prune = Instant::now();
    loop {
        // Processed inbox rows only serve de-duplication; their effects live in the ledger.
        if last_prune.elapsed() >= INBOX_PRUNE_EVERY {
            let before = Utc::now() - chrono::Duration::days(INBOX_KEEP_DAYS);
            let pruned = blocking(&ledger, move |l| l.prune_inbox(before)).await?;
            tracing::debug!(pruned, "inbox pruned");
            last_prune = Instant::now();
        }
        loop {
            let r = Arc::clone(&rules);
            let stats = blocking(&ledger, move |l| {
                let mut mint = || uuid::Uuid::new_v4().to_string();
                l.reconcile_pending_within(&r, batch, budget, Utc::now(), &mut mint)
            })
            .await?;
            if stats.processed == 0 {
                break;
            }
            progress.reconciled.fetch_add(stats.processed as u64, Ordering::Relaxed);
            tracing::debug!(
                processed = stats.processed,
                new_leads = stats.new_leads,
                new_links = stats.new_links,
                pushes = stats.pushes_planned,
                "reconciled"
            );
            for s in &systems {
                s.push_wake.notify_one();
                if stats.rereads > 0 {
                    s.fetch_wake.notify_one();
                }
            }
            if shutdown.is_triggered() {
                break;
            }
        }
        if shutdown.is_triggered()
            || !idle(&mut shutdown, Duration::from_secs(1), Some(&wake)).await
        {
            break;
        }
    }
    tracing::debug!("reconciler stopped");
    Ok(())
}

async fn pusher(
    sys: Arc<SystemHandle>,
    all: Vec<Arc<SystemHandle>>,
    ledger: Arc<Ledger>,
    rules: Arc<Rules>,
    progress: Arc<Progress>,
    sync: SyncSettings,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let name = sys.name.clone();
    let max = sys.connector.limits().push_batch_max.max(1);
    let retry = PushRetry {
        max_attempts: sync.push_max_attempts,
        base_delay: sync.push_retry_base,
        max_delay: sync.push_retry_max,
    };
    // The newest planning time of a held create for which this system's poller was woken.
    let mut woke_for: Option<chrono::DateTime<Utc>> = None;
    while !shutdown.is_triggered() {
        // Decided before reading the due rows, in this order: the newest complete read of every
        // system, then whether every change read so far is reconciled (see below).
        let read_from = progress.read_through_wall();
        let inbox_idle = !blocking(&ledger, |l| l.inbox_has_pending()).await?;
        let n = name.clone();
        let mut due = blocking(&ledger, move |l| l.due_pushes(&n, max, Utc::now())).await?;
        // While a backfill is being read or the reconciler is still turning inbox changes into
        // pushes, wait a little for a fuller batch: write calls are the scarce resource (vendor
        // quotas), not latency. At steady state a single change goes out at once.
        let mut lingered = Duration::ZERO;
        while !due.is_empty() && due.len() < max && lingered < PUSH_LINGER_MAX {
            let busy =
                progress.backfilling() || blocking(&ledger, |l| l.inbox_has_pending()).await?;
            if !busy || shutdown.is_triggered() {
                break;
            }
            tokio::time::sleep(PUSH_LINGER_STEP).await;
            lingered += PUSH_LINGER_STEP;
            let n = name.clone();
            due = blocking(&ledger, move |l| l.due_pushes(&n, max, Utc::now())).await?;
        }
        if due.is_empty() {
            let n = name.clone();
            let next = blocking(&ledger, move |l| l.next_push_due(&n)).await?;
            let wait = next
                .and_then(|t| (t - Utc::now()).to_std().ok())
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            if !idle(&mut shutdown, wait, Some(&sys.push_wake)).await {
                break;
            }
            continue;
        }
        // Creates and updates go out as separate calls, so that a call refused as a whole
        // dead-letters only records of its own kind.
        let (mut creates, updates): (Vec<_>, Vec<_>) =
            due.into_iter().partition(|d| matches!(d.record.op, PushOp::Create { .. }));
        // Never create a record in a system before every record it held when the create was
        // planned has been read and reconciled: the person may be there already (made by hand
        // a moment before, or a Salesforce lead that does not carry our ledger id), and
        // creating it again would make a duplicate. So a create waits for a read of every
        // system that started after it was planned (a change in another system can make a
        // record here the person's: `Progress::read_through_wall`), and for the reconciler to
        // take what those reads found (a record of the person links to them and drops the
        // create). The pollers are woken for it, so the wait is one incremental read, not a
        // poll interval or a webhook sweep.
        let held: Vec<chrono::DateTime<Utc>> = creates
            .iter()
            .filter(|d| !(inbox_idle && read_from.is_some_and(|r| r > d.planned_at)))
            .map(|d| d.planned_at)
            .collect();
        creates.retain(|d| inbox_idle && read_from.is_some_and(|r| r > d.planned_at));
        for d in &mut creates {
            d.cleared_by_read = read_from;
        }
        if let Some(newest) = held.iter().max().copied()
            && read_from.is_none_or(|r| r <= newest)
            && woke_for.is_none_or(|w| w < newest)
        {
            woke_for = Some(newest);
            for s in &all {
                s.poll_wake.notify_one();
            }
        }
        let mut pushed_any = false;
        for group in [creates, updates] {
            if group.is_empty() {
                continue;
            }
            pushed_any = true;
            let pushing = Pushing::start(&progress.pushing);
            let healthy = push_group(&sys, &ledger, &rules, &progress, retry, group).await?;
            drop(pushing);
            // Each group's end is a push round's end (`Progress::polled_through_since`).
            if let Ok(mut g) = progress.last_push_at.lock() {
                *g = Some(Instant::now());
            }
            // The while condition sees a shutdown that fires during this wait.
            if !healthy && !idle(&mut shutdown, sync.error_backoff * 12, None).await {
                break;
            }
        }
        if !pushed_any {
            // Only held-back creates were due: wait for the reads to finish.
            if !idle(&mut shutdown, Duration::from_millis(200), Some(&sys.push_wake)).await {
                break;
            }
            continue;
        }
    }
    tracing::debug!("pusher stopped");
    Ok(())
}

/// Push one group of records and record the outcome. Returns false when the system should be
/// left alone for a while (credentials or configuration refused).
async fn push_group(
    sys: &SystemHandle,
    ledger: &Arc<Ledger>,
    rules: &Arc<Rules>,
    progress: &Progress,
    retry: PushRetry,
    mut due: Vec<crate::ledger::DuePush>,
) -> anyhow::Result<bool> {
    let name = sys.name.clone();
    let sent_at = Utc::now();
    for d in &mut due {
        d.sent_at = Some(sent_at);
    }
    let mut records: Vec<_> = due.iter().map(|d| d.record.clone()).collect();
    // Consent only tightens: a record that would clear an opt-out is refused, never sent.
    let refused = crate::connectors::consent::refuse_resubscribes(&records);
    records.retain(|r| refused.iter().all(|o| o.outbox_id() != r.outbox_id));
    tracing::debug!(records = records.len(), "pushing");
    let t0 = Instant::now();
    let result =
        if records.is_empty() { Ok(Vec::new()) } else { sys.connector.push(&records).await }.map(
            |mut outcomes| {
                outcomes.extend(refused);
                outcomes
            },
        );
    // The push has landed by now (if at all): a read that started before this may predate it.
    let ended = Utc::now();
    crate::metrics::push_duration(name.as_str(), t0.elapsed());
    let r = Arc::clone(rules);
    match result {
        Ok(outcomes) => {
            let n = name.clone();
            let tally = blocking(ledger, move |l| {
                l.record_push_results(&n, &due, &outcomes, &r, retry, ended, Utc::now())
            })
            .await?;
            bump(&progress.pushed_created, &name, tally.created as u64);
            bump(&progress.pushed_updated, &name, tally.updated as u64);
            bump(&progress.dead, &name, tally.dead as u64);
            let m = crate::metrics::records_pushed;
            m(name.as_str(), crate::metrics::OUTCOME_OK, (tally.created + tally.updated) as u64);
            m(name.as_str(), crate::metrics::OUTCOME_REJECTED, tally.dead as u64);
            m(name.as_str(), crate::metrics::OUTCOME_RETRY, tally.retried as u64);
            if tally.dead > 0 {
                tracing::warn!(
                    dead = tally.dead,
                    "records rejected by the vendor, kept as dead letters"
                );
            }
            Ok(true)
        }
        Err(e) => {
            let code = e.code();
            tracing::warn!(error_code = %code, error = %e, records = due.len(), "push failed");
            let dead = matches!(e, ConnectorError::Rejected { .. });
            let msg = e.to_string();
            let n = name.clone();
            blocking(ledger, move |l| {
                l.defer_pushes(&due, &code, &msg, dead, retry, Utc::now())?;
                l.record_error(&n, &msg, Utc::now())
            })
            .await?;
            Ok(!matches!(e, ConnectorError::Auth(_) | ConnectorError::Config(_)))
        }
    }
}

#[cfg(test)]
mod pass_tests {
    use super::*;

    /// Convergence seeds 205 and 394: a create into HubSpot went out after a read of HubSpot
    /// alone, while the Salesforce change that made a record there the person's (an edit, a
    /// lead's conversion) was not read yet. Creates are cleared by a read of every system.
    #[test]
    fn creates_are_cleared_by_a_read_of_every_system_only() {
        let (crm, mkt) = (SystemName("crm".into()), SystemName("marketing".into()));
        let progress = Progress::new(&[crm.clone(), mkt.clone()]);
        let w0 = Utc::now();
        let set = |name: &SystemName, ms: i64| {
            let mut g = progress.caught_up_wall.lock().expect("lock");
            g.insert(name.clone(), w0 + chrono::Duration::milliseconds(ms));
        };
        set(&mkt, 1000);
        assert_eq!(progress.read_through_wall(), None, "salesforce never read through");
        set(&crm, 400);
        assert_eq!(
            progress.read_through_wall(),
            Some(w0 + chrono::Duration::milliseconds(400)),
            "the older of the two reads clears"
        );
        set(&crm, 1500);
        assert_eq!(progress.read_through_wall(), Some(w0 + chrono::Duration::milliseconds(1000)));
    }

    /// Convergence seeds 270 and 367: the archived sweep that ends a HubSpot pass started
    /// after a contact was made by hand, and the search before it had not seen that contact;
    /// the pass must count from its first page.
    #[test]
    fn a_pass_is_complete_back_to_its_first_page_only() {
        let t0 = Instant::now();
        let w0 = Utc::now();
        let at = |ms: u64| {
            (t0 + Duration::from_millis(ms), w0 + chrono::Duration::milliseconds(ms as i64))
        };
        let mut pass = Pass::default();
        pass.page(at(0)); // the search
        pass.page(at(60)); // the archived sweep
        assert_eq!(pass.complete(), Some(at(0)));
        assert_eq!(pass.complete(), None, "a pass is reported once");
        pass.page(at(1000));
        assert_eq!(pass.complete(), Some(at(1000)), "the next pass starts anew");
    }
}
