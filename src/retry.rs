//! Retries with exponential backoff and full jitter, honouring `Retry-After`.
//!
//! The only module that touches the `backoff` crate (unmaintained upstream), so it can be
//! swapped in one place.

use std::future::Future;
use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;

use crate::connectors::ConnectorError;

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_interval: Duration,
    /// Give up after this many attempts in all (the first call included).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(200),
            max_interval: Duration::from_secs(30),
            max_attempts: 6,
        }
    }
}

impl RetryPolicy {
    fn backoff(&self) -> ExponentialBackoff {
        ExponentialBackoff {
            initial_interval: self.initial,
            current_interval: self.initial,
            // Full jitter: a delay anywhere in [0, 2x] of the current interval.
            randomization_factor: 1.0,
            multiplier: 2.0,
            max_interval: self.max_interval,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        }
    }
}

/// Run `op` until it succeeds, fails for good, or runs out of attempts. Transient errors and
/// rate limits are retried; a `Retry-After` wins over the computed delay when it is longer.
///
/// # Errors
/// The last error when it is not retryable or the attempts are spent.
pub async fn retry<T, F, Fut>(policy: RetryPolicy, mut op: F) -> Result<T, ConnectorError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ConnectorError>>,
{
    let mut backoff = policy.backoff();
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < policy.max_attempts => {
                let computed = backoff.next_backoff().unwrap_or(policy.max_interval);
                let delay = match &e {
                    ConnectorError::RateLimited { retry_after: Some(ra) } => (*ra).max(computed),
                    _ => computed,
                };
                tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, error = %e, "retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn retries_transient_then_succeeds() {
        let calls = AtomicU32::new(0);
        let r = retry(RetryPolicy::default(), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(ConnectorError::Transient("boom".into()))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.expect("third call succeeds"), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after() {
        let start = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let r = retry(RetryPolicy::default(), || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(ConnectorError::RateLimited { retry_after: Some(Duration::from_secs(10)) })
            } else {
                Ok(())
            }
        })
        .await;
        assert!(r.is_ok());
        assert!(start.elapsed() >= Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_rejections() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(RetryPolicy::default(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ConnectorError::Rejected { code: "INVALID_FIELD".into(), message: "x".into() })
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
        let r: Result<(), _> = retry(policy, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ConnectorError::Transient("down".into()))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
