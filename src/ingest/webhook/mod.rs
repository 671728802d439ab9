//! Webhook verification and parsing, one file per sender (pure, no IO), and the HTTP listener
//! that serves them ([`server`]).
//!
//! The HTTP layer hands over the raw request exactly as received (method, full URL, headers,
//! body bytes) and gets back either typed events or a [`WebhookError`] whose
//! [`status`](WebhookError::status) is the answer to send. Verification always runs on the raw
//! bytes before any parsing: re-serialising JSON or XML before checking a signature is the
//! classic way to break it (RELIABILITY.md §1.1).
//!
//! **Invariant:** no error message carries body contents (they hold emails and names); reasons
//! are static strings.

pub mod hubspot;
pub mod salesforce;
pub mod server;

use axum::http::StatusCode;
use subtle::ConstantTimeEq;

/// Largest body we verify or parse. Every sender we know stays far below it (HubSpot sends at
/// most 100 events, Salesforce at most 100 notifications); axum's own default limit is 2 MiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why a webhook request was refused, grouped by the HTTP status the receiver answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The signature is missing, undecodable or does not match any configured secret.
    #[error("webhook signature missing or invalid")]
    BadSignature,
    /// The signed timestamp is more than the allowed skew in the past or in the future.
    #[error("webhook timestamp outside the accepted window")]
    Stale,
    /// The message names a different sender than the one configured (Salesforce org id).
    #[error("webhook sent by an unexpected organization")]
    WrongOrganization,
    /// The body is not what the sender documents. `reason` is static text, never body content.
    #[error("malformed webhook body: {reason}")]
    Malformed {
        /// What was wrong, without quoting the body.
        reason: &'static str,
    },
    /// The body exceeds [`MAX_BODY_BYTES`].
    #[error("webhook body too large")]
    TooLarge,
}

impl WebhookError {
    /// The HTTP status the receiver answers with.
    ///
    /// HubSpot does not retry 4xx answers other than 429, Salesforce retries anything that is not
    /// an ack: both are fine here because a request we refuse is one we could never accept.
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookError::BadSignature | WebhookError::Stale | WebhookError::WrongOrganization => {
                StatusCode::UNAUTHORIZED
            }
            WebhookError::Malformed { .. } => StatusCode::BAD_REQUEST,
            WebhookError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    pub(crate) fn malformed(reason: &'static str) -> Self {
        WebhookError::Malformed { reason }
    }
}

/// Refuses bodies above [`MAX_BODY_BYTES`]. The HTTP layer should also stop reading at that
/// limit; this check keeps the pure layer safe when called directly.
///
/// # Errors
/// [`WebhookError::TooLarge`] when `body` is longer than the limit.
pub fn check_body_size(body: &[u8]) -> Result<(), WebhookError> {
    if body.len() > MAX_BODY_BYTES { Err(WebhookError::TooLarge) } else { Ok(()) }
}

/// Constant-time equality of two byte strings. Different lengths are simply unequal: a
/// comparison that stops at the shorter input accepted empty signatures in the Svix library
/// (RELIABILITY.md §1.2), so the length is part of the answer, not a shortcut to skip.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_needs_equal_length_and_content() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"", b"abc"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn statuses_follow_the_error_kind() {
        assert_eq!(WebhookError::BadSignature.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(WebhookError::Stale.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(WebhookError::WrongOrganization.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(WebhookError::malformed("x").status(), StatusCode::BAD_REQUEST);
        assert_eq!(WebhookError::TooLarge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn body_size_limit_is_inclusive() {
        assert!(check_body_size(&vec![b'a'; MAX_BODY_BYTES]).is_ok());
        assert_eq!(check_body_size(&vec![b'a'; MAX_BODY_BYTES + 1]), Err(WebhookError::TooLarge));
    }
}
