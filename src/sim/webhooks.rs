//! The delivery engine both simulators use to call a receiver the way their vendor does:
//! a queue, a short batching window, a cap on requests in flight, a per-request timeout, a retry
//! schedule with jitter, and counters.
//!
//! Each vendor supplies an `Endpoint`: it builds the request for a batch *at send time* (so a
//! HubSpot retry is re-signed with a fresh timestamp and a Salesforce notification carries the
//! record's latest values) and judges the response. The engine knows nothing about JSON or SOAP.
//!
//! Architecture invariants:
//! - Items are counted exactly once as delivered or dropped; `queued` is the difference.
//! - The concurrency permit is held only while a request is in flight, never while a batch waits
//!   for its next retry (HubSpot's `maxConcurrentRequests` limits requests, not batches).
//! - `Engine::stop` (also run on drop) ends the dispatcher and every delivery task at its next
//!   await; no task outlives the simulator handle that owns the engine.
//! - `time_scale` multiplies retry delays only, never the batching window or the timeout, so a
//!   test can run a 24-hour schedule in seconds while still exercising real timeouts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Semaphore, mpsc, watch};

/// When a failed batch is tried again.
#[derive(Debug, Clone, PartialEq)]
pub enum RetrySchedule {
    /// Retry `n` (0-based) waits `delays[n]` after the failed attempt; after the last one the
    /// batch is dropped. HubSpot: 10 retries.
    Fixed(Vec<Duration>),
    /// Waits `initial`, then `initial * factor`, ... capped at `max_interval`, while the sum of
    /// the waits stays within `give_up_after`; then the batch is dropped. Salesforce.
    Exponential { initial: Duration, factor: f64, max_interval: Duration, give_up_after: Duration },
}

impl RetrySchedule {
    /// The unscaled, unjittered wait before retry `retry` (0-based), given the waits so far.
    /// `None` means give up.
    fn delay(&self, retry: u32, waited: Duration) -> Option<Duration> {
        match self {
            RetrySchedule::Fixed(delays) => delays.get(retry as usize).copied(),
            RetrySchedule::Exponential { initial, factor, max_interval, give_up_after } => {
                let exp = i32::try_from(retry).unwrap_or(i32::MAX);
                let secs =
                    (initial.as_secs_f64() * factor.powi(exp)).min(max_interval.as_secs_f64());
                let wait = Duration::from_secs_f64(secs.max(0.0));
                (waited + wait <= *give_up_after).then_some(wait)
            }
        }
    }

    /// How many retries the schedule allows before dropping.
    pub fn max_retries(&self) -> u32 {
        let mut waited = Duration::ZERO;
        let mut n = 0u32;
        while let Some(d) = self.delay(n, waited) {
            waited += d;
            n += 1;
            if n == u32::MAX {
                break;
            }
        }
        n
    }
}

/// How an engine batches, limits and retries.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryOptions {
    /// How long the first queued item waits for others to join its batch.
    pub batch_window: Duration,
    /// Most items in one request (both vendors: 100).
    pub max_batch: usize,
    /// Most requests in flight at once.
    pub max_concurrent: usize,
    /// A request not answered (body included) within this is a failed attempt.
    pub timeout: Duration,
    pub retry: RetrySchedule,
    /// Each retry delay is multiplied by a uniform factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// Multiplies every retry delay: 1.0 is real time, 0.0001 turns 24 h into 8.6 s. Does not
    /// touch `batch_window` or `timeout`.
    pub time_scale: f64,
}

/// Delivery counters. Items are events (HubSpot) or notifications (Salesforce).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// HTTP requests sent (first tries and retries).
    pub requests_sent: u64,
    /// Requests the receiver accepted.
    pub requests_succeeded: u64,
    /// Attempts that failed: bad status, bad ack, timeout, connection failure.
    pub failed_attempts: u64,
    /// Items given up on after the last retry.
    pub items_dropped: u64,
    /// Items accepted and not yet delivered or dropped (waiting, in flight, or between retries).
    pub items_queued: u64,
}

/// What an [`Endpoint`] wants done with one attempt.
pub(crate) enum Prepared {
    /// Send this request.
    Send(Box<reqwest::RequestBuilder>),
    /// Nothing to send any more (e.g. the target was removed); counts as delivered.
    Done,
}

/// The vendor-specific half of delivery.
pub(crate) trait Endpoint: Send + Sync + 'static {
    type Item: Send + Sync + 'static;

    /// Builds attempt `attempt` (0 = first try) for `items`, at send time.
    fn prepare(&self, client: &reqwest::Client, items: &[Self::Item], attempt: u32) -> Prepared;

    /// Whether the receiver accepted the batch.
    fn accepted(&self, status: reqwest::StatusCode, body: &[u8]) -> bool;
}

#[derive(Default)]
struct Counters {
    requests_sent: AtomicU64,
    requests_succeeded: AtomicU64,
    failed_attempts: AtomicU64,
    items_dropped: AtomicU64,
    items_queued: AtomicU64,
}

struct Shared<E: Endpoint> {
    endpoint: E,
    opts: DeliveryOptions,
    client: reqwest::Client,
    permits: Semaphore,
    /// The permit count the semaphore was last sized to.
    limit: Mutex<usize>,
    counters: Counters,
    stop: watch::Sender<bool>,
}

/// A running delivery queue for one simulator. Must be created inside a tokio runtime.
pub(crate) struct Engine<E: Endpoint> {
    tx: mpsc::UnboundedSender<E::Item>,
    shared: Arc<Shared<E>>,
}

impl<E: Endpoint> Engine<E> {
    /// Spawns the dispatcher on the current runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime (callers check with `Handle::try_current` first).
    pub fn start(endpoint: E, opts: DeliveryOptions) -> Engine<E> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, _) = watch::channel(false);
        // The client-wide timeout covers connect, send and reading the body.
        let client = reqwest::Client::builder()
            .timeout(opts.timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let max = opts.max_concurrent.max(1);
        let shared = Arc::new(Shared {
            endpoint,
            client,
            permits: Semaphore::new(max),
            limit: Mutex::new(max),
            counters: Counters::default(),
            stop,
            opts,
        });
        tokio::spawn(dispatch(Arc::clone(&shared), rx));
        Engine { tx, shared }
    }

    /// Queues one item for delivery.
    pub fn push(&self, item: E::Item) {
        if *self.shared.stop.borrow() {
            return;
        }
        self.shared.counters.items_queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(item).is_err() {
            // The dispatcher is gone (runtime shut down): the item can never be sent.
            self.shared.counters.items_queued.fetch_sub(1, Ordering::Relaxed);
            self.shared.counters.items_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Changes the cap on requests in flight; requests already in flight finish.
    pub fn set_max_concurrent(&self, max: usize) {
        let max = max.max(1);
        let mut limit = self.shared.limit.lock().unwrap_or_else(|p| p.into_inner());
        if max > *limit {
            self.shared.permits.add_permits(max - *limit);
        } else {
            // Permits held right now cannot be forgotten; the shortfall is taken back as they
            // return, by a task that acquires and forgets them.
            let want = *limit - max;
            let got = self.shared.permits.forget_permits(want);
            if got < want {
                let shared = Arc::clone(&self.shared);
                tokio::spawn(async move {
                    if let Ok(p) = shared
                        .permits
                        .acquire_many(u32::try_from(want - got).unwrap_or(u32::MAX))
                        .await
                    {
                        p.forget();
                    }
                });
            }
        }
        *limit = max;
    }

    pub fn stats(&self) -> DeliveryStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DeliveryStats {
            requests_sent: get(&c.requests_sent),
            requests_succeeded: get(&c.requests_succeeded),
            failed_attempts: get(&c.failed_attempts),
            items_dropped: get(&c.items_dropped),
            items_queued: get(&c.items_queued),
        }
    }

    /// Stops the dispatcher and every delivery task; queued items are abandoned.
    pub fn stop(&self) {
        self.shared.stop.send_replace(true);
    }
}

/// An engine started on first use, from inside a runtime: the simulators are built with a
/// plain `new`, possibly before any runtime exists, and most never send a webhook.
pub(crate) struct LazyEngine<E: Endpoint> {
    slot: Mutex<Option<Engine<E>>>,
    stopped: std::sync::atomic::AtomicBool,
}

impl<E: Endpoint> Default for LazyEngine<E> {
    fn default() -> Self {
        LazyEngine { slot: Mutex::new(None), stopped: std::sync::atomic::AtomicBool::new(false) }
    }
}

impl<E: Endpoint> LazyEngine<E> {
    /// Runs `f` on the engine, starting it with `make` first if needed. Does nothing once
    /// stopped, or outside a tokio runtime (there is nothing to deliver with).
    pub fn with<R>(
        &self,
        make: impl FnOnce() -> (E, DeliveryOptions),
        f: impl FnOnce(&Engine<E>) -> R,
    ) -> Option<R> {
        if self.stopped.load(Ordering::Acquire) {
            return None;
        }
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            if tokio::runtime::Handle::try_current().is_err() {
                tracing::warn!("webhook delivery needs a tokio runtime; events not sent");
                return None;
            }
            let (endpoint, opts) = make();
            *slot = Some(Engine::start(endpoint, opts));
        }
        slot.as_ref().map(f)
    }

    /// Runs `f` on the engine if it was started.
    pub fn if_started<R>(&self, f: impl FnOnce(&Engine<E>) -> R) -> Option<R> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(f)
    }

    pub fn stats(&self) -> DeliveryStats {
        self.if_started(Engine::stats).unwrap_or_default()
    }

    /// Stops delivery for good; later pushes are ignored.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.if_started(Engine::stop);
    }
}

impl<E: Endpoint> Drop for Engine<E> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Resolves when `stop` is set (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn dispatch<E: Endpoint>(shared: Arc<Shared<E>>, mut rx: mpsc::UnboundedReceiver<E::Item>) {
    let stop = shared.stop.subscribe();
    loop {
        let first = tokio::select! {
            item = rx.recv() => match item { Some(i) => i, None => return },
            () = stopped(stop.clone()) => return,
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + shared.opts.batch_window;
        while batch.len() < shared.opts.max_batch.max(1) {
            tokio::select! {
                item = rx.recv() => match item { Some(i) => batch.push(i), None => break },
                () = tokio::time::sleep_until(deadline) => break,
                () = stopped(stop.clone()) => return,
            }
        }
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = deliver(&shared, batch) => {}
                () = stopped(stop) => {}
            }
        });
    }
}

/// Runs every attempt of one batch until it is accepted or the schedule gives up.
async fn deliver<E: Endpoint>(shared: &Shared<E>, batch: Vec<E::Item>) {
    let n = batch.len() as u64;
    let c = &shared.counters;
    let mut waited = Duration::ZERO;
    let mut attempt = 0u32;
    loop {
        let ok = {
            let Ok(_permit) = shared.permits.acquire().await else { return };
            match shared.endpoint.prepare(&shared.client, &batch, attempt) {
                Prepared::Done => true,
                Prepared::Send(request) => {
                    let request = *request;
                    c.requests_sent.fetch_add(1, Ordering::Relaxed);
                    let ok = match request.send().await {
                        Ok(response) => {
                            let status = response.status();
                            match response.bytes().await {
                                Ok(body) => shared.endpoint.accepted(status, &body),
                                Err(_) => false,
                            }
                        }
                        Err(_) => false,
                    };
                    if ok {
                        c.requests_succeeded.fetch_add(1, Ordering::Relaxed);
                    } else {
                        c.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    }
                    ok
                }
            }
        };
        if ok {
            c.items_queued.fetch_sub(n, Ordering::Relaxed);
            return;
        }
        let Some(delay) = shared.opts.retry.delay(attempt, waited) else {
            c.items_queued.fetch_sub(n, Ordering::Relaxed);
            c.items_dropped.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(
                items = n,
                attempts = attempt + 1,
                "webhook batch dropped after last retry"
            );
            return;
        };
        waited += delay;
        attempt += 1;
        tokio::time::sleep(scaled(delay, &shared.opts)).await;
    }
}

/// The real wait for a schedule delay: jittered, then time-scaled.
fn scaled(delay: Duration, opts: &DeliveryOptions) -> Duration {
    let jitter = opts.jitter.clamp(0.0, 1.0);
    let factor =
        if jitter > 0.0 { rand::rng().random_range(1.0 - jitter..=1.0 + jitter) } else { 1.0 };
    let secs = delay.as_secs_f64() * factor * opts.time_scale.max(0.0);
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_schedule_counts_its_delays() {
        let s = RetrySchedule::Fixed(vec![Duration::from_secs(1); 10]);
        assert_eq!(s.max_retries(), 10);
        assert_eq!(s.delay(9, Duration::ZERO), Some(Duration::from_secs(1)));
        assert_eq!(s.delay(10, Duration::ZERO), None);
    }

    #[test]
    fn exponential_schedule_caps_and_gives_up() {
        let s = RetrySchedule::Exponential {
            initial: Duration::from_secs(5),
            factor: 2.0,
            max_interval: Duration::from_secs(7200),
            give_up_after: Duration::from_secs(86_400),
        };
        assert_eq!(s.delay(0, Duration::ZERO), Some(Duration::from_secs(5)));
        assert_eq!(s.delay(3, Duration::ZERO), Some(Duration::from_secs(40)));
        assert_eq!(s.delay(20, Duration::ZERO), Some(Duration::from_secs(7200)));
        assert_eq!(s.delay(20, Duration::from_secs(80_000)), None);
        // 5..5120 s (11 waits, 10,235 s) then 7,200 s waits while the total stays within 24 h.
        assert_eq!(s.max_retries(), 21);
    }

    #[test]
    fn time_scale_multiplies_delays() {
        let opts = DeliveryOptions {
            batch_window: Duration::ZERO,
            max_batch: 1,
            max_concurrent: 1,
            timeout: Duration::from_secs(1),
            retry: RetrySchedule::Fixed(Vec::new()),
            jitter: 0.0,
            time_scale: 0.001,
        };
        assert_eq!(scaled(Duration::from_secs(1000), &opts), Duration::from_secs(1));
        let jittered = DeliveryOptions { jitter: 0.2, ..opts };
        for _ in 0..50 {
            let d = scaled(Duration::from_secs(1000), &jittered);
            assert!(d >= Duration::from_millis(799) && d <= Duration::from_millis(1201), "{d:?}");
        }
    }
}

/// A local receiver for the simulators' webhook tests: records every request and answers as
/// the test script says, optionally after a delay; tracks the most requests seen in flight.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;

    /// One request as received.
    #[derive(Debug, Clone)]
    pub struct Received {
        pub method: String,
        /// Path and query as received.
        pub path_and_query: String,
        pub headers: HeaderMap,
        pub body: Bytes,
    }

    /// Answer for request number `n` (0-based): status and body.
    pub type Script = Arc<dyn Fn(usize, &Received) -> (u16, String) + Send + Sync>;

    struct St {
        script: Script,
        delay: Duration,
        received: Mutex<Vec<Received>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    pub struct Receiver {
        /// `http://127.0.0.1:PORT`.
        pub base: String,
        st: Arc<St>,
    }

    impl Receiver {
        pub fn received(&self) -> Vec<Received> {
            self.st.received.lock().expect("not poisoned").clone()
        }
        pub fn max_in_flight(&self) -> usize {
            self.st.max_in_flight.load(Ordering::SeqCst)
        }
        /// Waits until at least `n` requests arrived, or panics after `within`.
        pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
            let deadline = tokio::time::Instant::now() + within;
            loop {
                let got = self.received();
                if got.len() >= n {
                    return got;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "only {} of {n} webhook requests arrived",
                    got.len()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    async fn handle(
        State(st): State<Arc<St>>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> impl IntoResponse {
        let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        st.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let r = Received {
            method: method.to_string(),
            path_and_query: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
            headers,
            body,
        };
        let n = {
            let mut all = st.received.lock().expect("not poisoned");
            all.push(r.clone());
            all.len() - 1
        };
        if !st.delay.is_zero() {
            tokio::time::sleep(st.delay).await;
        }
        let (status, body) = (st.script)(n, &r);
        st.in_flight.fetch_sub(1, Ordering::SeqCst);
        (StatusCode::from_u16(status).expect("valid status"), body)
    }

    pub async fn receiver(script: Script, delay: Duration) -> Receiver {
        let st = Arc::new(St {
            script,
            delay,
            received: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let app = axum::Router::new().fallback(handle).with_state(Arc::clone(&st));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { base: format!("http://{addr}"), st }
    }
}
