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
use crate::connectors::{AnyConnector, ApiCallCounts, Connector, ConnectorError};
use crate::domain::{PushOp, SystemName};
use crate::ledger::{Ledger, LedgerError, PushRetry};
use crate::reconcile::{Rules, SystemRules};
use crate::settings::{ConnectorSettings, Settings, SyncSettings};
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
    Ok(Rules { systems, status_implies_stage: settings.sync.status_implies_stage.clone() })
}

fn system_rules(s: &crate::settings::SystemSettings, connector: &AnyConnector) -> SystemRules {
    let (map, object_type) = match connector {
        AnyConnector::Salesforce(c) => (c.field_map().clone(), "Lead".to_string()),
        AnyConnector::Hubspot(c) => (c.field_map().clone(), "contact".to_string()),
    };
    SystemRules { name: s.name.clone(), role: s.role, object_type, create: s.create, map }
}

/// One configured system at run time.
pub struct SystemHandle {
    pub name: SystemName,
    pub connector: AnyConnector,
    push_wake: Notify,
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
    /// When the newest push round finished.
    last_push_at: Mutex<Option<Instant>>,
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
    /// the last push finished, so whatever changed before and whatever leadsync wrote has been
    /// read back.
    pub fn polled_through_since(&self, since: Instant) -> bool {
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
    progress: Arc<Progress>,
    reconcile_wake: Arc<Notify>,
}

impl App {
    /// Open the ledger and build every connector.
    ///
    /// # Errors
    /// The ledger cannot be opened or a connector cannot be built.
    pub fn build(settings: &Settings) -> anyhow::Result<App> {
        let ledger = Ledger::open(&settings.ledger_path)
            .with_context(|| format!("cannot open ledger {}", settings.ledger_path.display()))?;
        let mut systems = Vec::new();
        let mut rules = Vec::new();
        for s in &settings.systems {
            let connector = build_connector(s)?;
            rules.push(system_rules(s, &connector));
            systems.push(Arc::new(SystemHandle {
                name: s.name.clone(),
                connector,
                push_wake: Notify::new(),
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
            rules: Arc::new(Rules {
                systems: rules,
                status_implies_stage: settings.sync.status_implies_stage.clone(),
            }),
            sync: settings.sync.clone(),
            progress: Arc::new(Progress::new(&names)),
            reconcile_wake: Arc::new(Notify::new()),
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
        for sys in &self.systems {
            let span = tracing::info_span!("poller", system = %sys.name);
            tasks.spawn(
                poller(
                    Arc::clone(sys),
                    Arc::clone(&self.ledger),
                    Arc::clone(&self.progress),
                    Arc::clone(&self.reconcile_wake),
                    self.sync.error_backoff,
                    shutdown.clone(),
                )
                .instrument(span),
            );
            let span = tracing::info_span!("pusher", system = %sys.name);
            tasks.spawn(
                pusher(
                    Arc::clone(sys),
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
                self.sync.reconcile_batch,
                shutdown.clone(),
            )
            .instrument(tracing::info_span!("reconciler")),
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
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Processed inbox rows are kept this long for de-duplication, and pruned this often.
const INBOX_KEEP_DAYS: i64 = 7;
const INBOX_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How long a pusher waits at most for a fuller batch while changes are still being reconciled.
const PUSH_LINGER_MAX: Duration = Duration::from_secs(2);
const PUSH_LINGER_STEP: Duration = Duration::from_millis(50);

/// Run a ledger call on a blocking thread.
async fn blocking<T, F>(ledger: &Arc<Ledger>, f: F) -> Result<T, LedgerError>
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

async fn poller(
    sys: Arc<SystemHandle>,
    ledger: Arc<Ledger>,
    progress: Arc<Progress>,
    reconcile_wake: Arc<Notify>,
    error_backoff: Duration,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let name = sys.name.clone();
    while !shutdown.is_triggered() {
        let n = name.clone();
        let cursor = blocking(&ledger, move |l| l.cursor(&n)).await?;
        let started = Instant::now();
        match sys.connector.poll_changes(&cursor).await {
            Ok(page) => {
                let n = name.clone();
                let count = page.changes.len();
                let next = page.next_cursor.clone();
                let changes = page.changes;
                let inserted = blocking(&ledger, move |l| {
                    let now = Utc::now();
                    let inserted = l.ingest(&n, "poll", &changes, Some(&next), now)?;
                    l.record_poll_ok(&n, now)?;
                    Ok(inserted)
                })
                .await?;
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
                if let Ok(mut g) = progress.caught_up_at.lock() {
                    g.insert(name.clone(), started);
                }
                if !idle(&mut shutdown, page.poll_again_after, None).await {
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

async fn reconciler(
    ledger: Arc<Ledger>,
    rules: Arc<Rules>,
    systems: Vec<Arc<SystemHandle>>,
    progress: Arc<Progress>,
    wake: Arc<Notify>,
    batch: usize,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
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
                l.reconcile_pending(&r, batch, Utc::now(), &mut mint)
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
    while !shutdown.is_triggered() {
        // Decided before reading the due rows: once this system has been read to its end and
        // every change read is reconciled, a create still due after that is for a person the
        // system did not have (see below).
        let creates_allowed =
            progress.caught_up_once(&name) && !blocking(&ledger, |l| l.inbox_has_pending()).await?;
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
        // Never create a record in a system before every record it already holds has been read
        // and reconciled: the person may be there already (a Salesforce lead does not carry
        // our ledger id until we wrote it), and creating it again would make a duplicate.
        if !creates_allowed {
            creates.clear();
        }
        let mut pushed_any = false;
        for group in [creates, updates] {
            if group.is_empty() {
                continue;
            }
            pushed_any = true;
            let healthy = push_group(&sys, &ledger, &rules, &progress, retry, group).await?;
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
        if let Ok(mut g) = progress.last_push_at.lock() {
            *g = Some(Instant::now());
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
    due: Vec<crate::ledger::DuePush>,
) -> anyhow::Result<bool> {
    let name = sys.name.clone();
    let started = Utc::now();
    let records: Vec<_> = due.iter().map(|d| d.record.clone()).collect();
    tracing::debug!(records = records.len(), "pushing");
    let t0 = Instant::now();
    let result = sys.connector.push(&records).await;
    crate::metrics::push_duration(name.as_str(), t0.elapsed());
    let r = Arc::clone(rules);
    match result {
        Ok(outcomes) => {
            let n = name.clone();
            let tally = blocking(ledger, move |l| {
                l.record_push_results(&n, &due, &outcomes, &r, retry, started, Utc::now())
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
