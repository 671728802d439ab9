//! SLA alerts to a Slack-compatible incoming webhook: one `POST {"text": ...}` per alert,
//! retried through [`crate::retry`] on 5xx, rate limits and network trouble.
//!
//! An alert names the ledger id and the person's system records (`system:object/id`) only:
//! never an email, a name or any field value, since webhook channels are widely readable.

use std::time::Duration;

use chrono::{DateTime, Utc};
use url::Url;

use crate::connectors::ConnectorError;
use crate::retry::{RetryPolicy, retry};

/// What went wrong with a lead's SLA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// `breached` or `escalated`.
    pub kind: &'static str,
    pub lead_id: String,
    pub due_at: DateTime<Utc>,
    /// The owner the lead should go to, when configured.
    pub reassign_to: Option<String>,
    /// `system:object_type/remote_id` of each open link.
    pub links: Vec<String>,
}

impl Alert {
    /// The message text (ids only).
    pub fn text(&self) -> String {
        let mut t = format!(
            "leadsync SLA {}: lead {} had no first touch by {}",
            self.kind,
            self.lead_id,
            self.due_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        if !self.links.is_empty() {
            t.push_str(&format!(" ({})", self.links.join(", ")));
        }
        if let Some(owner) = &self.reassign_to {
            t.push_str(&format!("; reassign to {owner}"));
        }
        t
    }
}

/// Sends alerts to the configured webhook, or nowhere.
#[derive(Debug, Clone)]
pub struct Alerter {
    client: reqwest::Client,
    url: Option<Url>,
    policy: RetryPolicy,
}

impl Alerter {
    /// # Errors
    /// The HTTP client cannot be built (TLS backend).
    pub fn new(url: Option<Url>, policy: RetryPolicy) -> Result<Alerter, ConnectorError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ConnectorError::Config(format!("alert client: {e}")))?;
        Ok(Alerter { client, url, policy })
    }

    /// Whether a webhook is configured.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    /// POST the alert; `Ok` without a webhook.
    ///
    /// # Errors
    /// The last error once retries are spent, or a 4xx refusal.
    pub async fn send(&self, alert: &Alert) -> Result<(), ConnectorError> {
        let Some(url) = &self.url else { return Ok(()) };
        let body = serde_json::json!({ "text": alert.text() });
        retry(self.policy, || async {
            let resp = self.client.post(url.clone()).json(&body).send().await.map_err(|e| {
                ConnectorError::Transient(format!("alert webhook: {}", e.without_url()))
            })?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else if status.is_server_error() || status.as_u16() == 408 {
                Err(ConnectorError::Transient(format!("alert webhook answered {status}")))
            } else if status.as_u16() == 429 {
                Err(ConnectorError::RateLimited { retry_after: None })
            } else {
                Err(ConnectorError::Rejected {
                    code: status.as_u16().to_string(),
                    message: "alert webhook refused the alert".into(),
                })
            }
        })
        .await
    }
}
