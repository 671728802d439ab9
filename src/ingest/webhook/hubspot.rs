//! HubSpot webhook verification (signatures v3, and v1/v2 when allowed) and event parsing.
//!
//! Recipes (api-facts §1.7, as implemented in HubSpot's Node SDK `src/utils/signature.ts`):
//! - v3: `base64(HMAC-SHA256(client_secret, method + uri + raw_body + timestamp))`, headers
//!   `X-HubSpot-Signature-v3` and `X-HubSpot-Request-Timestamp` (epoch milliseconds, signed as the
//!   header string). We reject timestamps more than five minutes away from now in either
//!   direction; the SDK only rejects old ones, but a future timestamp is as replayable.
//! - v1: `hex(SHA-256(client_secret + raw_body))`; v2: `hex(SHA-256(client_secret + method + uri +
//!   raw_body))`, header `X-HubSpot-Signature` with `X-HubSpot-Signature-Version`. These are
//!   plain hashes with no timestamp, so a captured request replays forever; they are accepted
//!   only when [`HubspotVerifyConfig::allow_legacy`] is set, and never when a v3 header is present
//!   (so stripping v3 cannot downgrade a request).
//!
//! URI: the full URL HubSpot called (scheme, host, path, query in the order received). The HTTP
//! layer sees only the path and query, so it must prepend the public base URL HubSpot was
//! configured with. HubSpot's guide percent-decodes `%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C
//! %3B` before signing, while its Node SDK signs the URL as given; we accept a signature over
//! either form. Without `%` escapes in the target URL both forms are the same string.
//!
//! Events are parsed only from a [`VerifiedBody`], which only [`verify`] creates.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{WebhookError, check_body_size, ct_eq};
use crate::domain::Sensitive;

/// Header carrying the v3 signature.
pub const HEADER_SIGNATURE_V3: &str = "x-hubspot-signature-v3";
/// Header carrying the v3 timestamp in epoch milliseconds.
pub const HEADER_TIMESTAMP: &str = "x-hubspot-request-timestamp";
/// Header carrying the v1 or v2 signature.
pub const HEADER_SIGNATURE: &str = "x-hubspot-signature";
/// Header naming the version (`v1` or `v2`) of [`HEADER_SIGNATURE`].
pub const HEADER_SIGNATURE_VERSION: &str = "x-hubspot-signature-version";

/// How far (either way) a v3 timestamp may be from now: five minutes, as HubSpot documents.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;

type HmacSha256 = Hmac<Sha256>;

/// What the receiver trusts. Several secrets allow rotating the app's client secret without
/// refusing requests signed with the previous one.
#[derive(Debug, Clone)]
pub struct HubspotVerifyConfig {
    /// The app's client secrets; a request is accepted when any one of them verifies.
    pub client_secrets: Vec<SecretString>,
    /// Accept v1/v2 signatures (no timestamp, replayable) when no v3 header is present.
    pub allow_legacy: bool,
}

/// The parts of a request that signatures cover, exactly as received.
#[derive(Debug, Clone, Copy)]
pub struct HubspotRequest<'a> {
    /// HTTP method as sent (`POST`).
    pub method: &'a str,
    /// The full URL HubSpot called: public base URL + path + query, as received.
    pub uri: &'a str,
    /// The raw body bytes.
    pub body: &'a [u8],
    /// `X-HubSpot-Signature-v3`.
    pub signature_v3: Option<&'a str>,
    /// `X-HubSpot-Request-Timestamp`.
    pub timestamp: Option<&'a str>,
    /// `X-HubSpot-Signature` (v1/v2).
    pub signature: Option<&'a str>,
    /// `X-HubSpot-Signature-Version` (`v1` or `v2`).
    pub signature_version: Option<&'a str>,
}

impl<'a> HubspotRequest<'a> {
    /// Collects the signature headers from an HTTP header map. Headers that are not visible
    /// ASCII count as absent, which then fails verification.
    pub fn from_headers(
        method: &'a str,
        uri: &'a str,
        headers: &'a axum::http::HeaderMap,
        body: &'a [u8],
    ) -> Self {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        HubspotRequest {
            method,
            uri,
            body,
            signature_v3: get(HEADER_SIGNATURE_V3),
            timestamp: get(HEADER_TIMESTAMP),
            signature: get(HEADER_SIGNATURE),
            signature_version: get(HEADER_SIGNATURE_VERSION),
        }
    }
}

/// A body whose signature verified. Only [`verify`] builds one, so events cannot be parsed from
/// an unverified body by mistake.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedBody<'a> {
    body: &'a [u8],
}

impl<'a> VerifiedBody<'a> {
    /// The verified raw bytes, for storing in the inbox as received.
    pub fn raw(&self) -> &'a [u8] {
        self.body
    }

    /// Parses the verified body into events.
    ///
    /// # Errors
    /// [`WebhookError::Malformed`] when the body is not a JSON array of HubSpot events.
    pub fn parse_events(&self) -> Result<Vec<HubspotEvent>, WebhookError> {
        parse_events(self.body)
    }
}

/// Verifies the request's signature against the configured secrets, at time `now_ms` (epoch ms).
///
/// # Errors
/// [`WebhookError::TooLarge`] above the body limit; [`WebhookError::Stale`] for a v3 timestamp
/// more than [`MAX_SKEW_MS`] from `now_ms`; [`WebhookError::BadSignature`] for a missing,
/// undecodable or non-matching signature, a missing or non-numeric timestamp, or a v1/v2
/// signature when legacy signatures are not allowed.
pub fn verify<'a>(
    config: &HubspotVerifyConfig,
    req: &HubspotRequest<'a>,
    now_ms: i64,
) -> Result<VerifiedBody<'a>, WebhookError> {
    check_body_size(req.body)?;
    let ok = if let Some(sig) = req.signature_v3 {
        verify_v3(config, req, sig, now_ms)?
    } else if config.allow_legacy
        && let Some(sig) = req.signature
    {
        verify_legacy(config, req, sig)
    } else {
        false
    };
    if ok { Ok(VerifiedBody { body: req.body }) } else { Err(WebhookError::BadSignature) }
}

/// The v3 signature of a request, as HubSpot computes it; for load generators and tests
/// that play HubSpot (the verifier never calls it: it checks with `verify_slice`).
pub fn sign_v3(secret: &str, method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// [`verify`], then [`VerifiedBody::parse_events`].
///
/// # Errors
/// Those of [`verify`] and of [`VerifiedBody::parse_events`].
pub fn verify_and_parse(
    config: &HubspotVerifyConfig,
    req: &HubspotRequest<'_>,
    now_ms: i64,
) -> Result<Vec<HubspotEvent>, WebhookError> {
    verify(config, req, now_ms)?.parse_events()
}

fn verify_v3(
    config: &HubspotVerifyConfig,
    req: &HubspotRequest<'_>,
    sig: &str,
    now_ms: i64,
) -> Result<bool, WebhookError> {
    let ts_str = req.timestamp.ok_or(WebhookError::BadSignature)?;
    // Digits only: `i64::from_str` would also take a leading `+`, which HubSpot never sends.
    if ts_str.is_empty() || ts_str.len() > 19 || !ts_str.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebhookError::BadSignature);
    }
    let ts: i64 = ts_str.parse().map_err(|_| WebhookError::BadSignature)?;
    if now_ms.abs_diff(ts) > MAX_SKEW_MS {
        return Err(WebhookError::Stale);
    }
    let Ok(expected) = BASE64.decode(sig.trim()) else {
        return Ok(false);
    };
    let mut ok = false;
    for uri in uri_candidates(req.uri) {
        for secret in &config.client_secrets {
            let mut mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
                .expect("HMAC accepts keys of any length");
            mac.update(req.method.as_bytes());
            mac.update(uri.as_bytes());
            mac.update(req.body);
            mac.update(ts_str.as_bytes());
            // verify_slice checks the length and compares in constant time. Every candidate is
            // tried (no early exit) so timing does not tell which secret or URI form matched.
            ok |= mac.verify_slice(&expected).is_ok();
        }
    }
    Ok(ok)
}

fn verify_legacy(config: &HubspotVerifyConfig, req: &HubspotRequest<'_>, sig: &str) -> bool {
    let Ok(expected) = hex::decode(sig.trim()) else {
        return false;
    };
    let version = req.signature_version.map(str::trim).unwrap_or("v1");
    let uris: Vec<String> = match version {
        "v1" => vec![String::new()],
        "v2" => uri_candidates(req.uri),
        _ => return false,
    };
    let mut ok = false;
    for uri in &uris {
        for secret in &config.client_secrets {
            let mut h = Sha256::new();
            h.update(secret.expose_secret().as_bytes());
            if version == "v2" {
                h.update(req.method.as_bytes());
                h.update(uri.as_bytes());
            }
            h.update(req.body);
            ok |= ct_eq(&h.finalize(), &expected);
        }
    }
    ok
}

/// The URI forms a valid signature may cover: as received (HubSpot's SDK) and with HubSpot's
/// listed escapes decoded (HubSpot's guide). One entry when they are equal.
fn uri_candidates(uri: &str) -> Vec<String> {
    let decoded = decode_signed_uri(uri);
    if decoded == uri { vec![decoded] } else { vec![uri.to_owned(), decoded] }
}

/// Percent-decodes exactly the escapes HubSpot's guide lists (case-insensitive hex), leaving
/// every other escape, such as `%20` or `%25`, as it is.
pub fn decode_signed_uri(uri: &str) -> String {
    const DECODED: &[(&str, char)] = &[
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let hit = after
            .get(..2)
            .and_then(|hex| DECODED.iter().find(|(code, _)| code.eq_ignore_ascii_case(hex)));
        match hit {
            Some((_, ch)) => {
                out.push(*ch);
                rest = &after[2..];
            }
            None => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One HubSpot webhook event. The property value may be an email or a name, so it is held as
/// [`Sensitive`] and never printed.
#[derive(Debug, Clone, PartialEq)]
pub struct HubspotEvent {
    /// Unique per event; with the portal id, the dedupe key (delivery is at-least-once).
    pub event_id: u64,
    pub subscription_id: Option<u64>,
    pub portal_id: u64,
    pub app_id: Option<u64>,
    /// Epoch milliseconds; events arrive in no particular order.
    pub occurred_at: i64,
    /// e.g. `contact.propertyChange`, `contact.creation`, `contact.merge`.
    pub subscription_type: String,
    /// 0 on the first delivery.
    pub attempt_number: u32,
    pub object_id: u64,
    /// e.g. `CRM_UI`, `API`, `INTEGRATION`, `IMPORT`.
    pub change_source: Option<String>,
    pub source_id: Option<String>,
    pub property_name: Option<String>,
    /// The new value, as a string whatever JSON scalar HubSpot sent.
    pub property_value: Option<Sensitive>,
    pub change_flag: Option<String>,
    pub primary_object_id: Option<u64>,
    pub merged_object_ids: Vec<u64>,
    pub new_object_id: Option<u64>,
    pub number_of_properties_moved: Option<u64>,
    pub from_object_id: Option<u64>,
    pub to_object_id: Option<u64>,
    pub association_type: Option<String>,
    pub association_removed: Option<bool>,
}

impl HubspotEvent {
    /// `hubspot:<portalId>:<eventId>`, the inbox idempotency key.
    pub fn dedupe_key(&self) -> String {
        format!("hubspot:{}:{}", self.portal_id, self.event_id)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent {
    event_id: u64,
    subscription_id: Option<u64>,
    portal_id: u64,
    app_id: Option<u64>,
    occurred_at: i64,
    subscription_type: String,
    #[serde(default)]
    attempt_number: u32,
    object_id: u64,
    change_source: Option<String>,
    source_id: Option<ScalarString>,
    property_name: Option<String>,
    property_value: Option<ScalarString>,
    change_flag: Option<String>,
    primary_object_id: Option<u64>,
    #[serde(default)]
    merged_object_ids: Vec<u64>,
    new_object_id: Option<u64>,
    number_of_properties_moved: Option<u64>,
    from_object_id: Option<u64>,
    to_object_id: Option<u64>,
    association_type: Option<String>,
    association_removed: Option<bool>,
}

/// A JSON scalar read as a string: HubSpot sends property values as strings, but a number or a
/// boolean must not make a whole batch unreadable.
struct ScalarString(String);

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(ScalarString(s)),
            serde_json::Value::Number(n) => Ok(ScalarString(n.to_string())),
            serde_json::Value::Bool(b) => Ok(ScalarString(b.to_string())),
            _ => Err(serde::de::Error::custom("expected a string, number or boolean")),
        }
    }
}

impl fmt::Debug for WireEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireEvent").field("event_id", &self.event_id).finish_non_exhaustive()
    }
}

pub(crate) fn parse_events(body: &[u8]) -> Result<Vec<HubspotEvent>, WebhookError> {
    check_body_size(body)?;
    // serde_json's messages quote the offending value, which may be PII: keep only a static
    // reason.
    let wire: Vec<WireEvent> = serde_json::from_slice(body)
        .map_err(|_| WebhookError::malformed("body is not a json array of hubspot events"))?;
    Ok(wire
        .into_iter()
        .map(|w| HubspotEvent {
            event_id: w.event_id,
            subscription_id: w.subscription_id,
            portal_id: w.portal_id,
            app_id: w.app_id,
            occurred_at: w.occurred_at,
            subscription_type: w.subscription_type,
            attempt_number: w.attempt_number,
            object_id: w.object_id,
            change_source: w.change_source,
            source_id: w.source_id.map(|s| s.0),
            property_name: w.property_name,
            property_value: w.property_value.map(|s| Sensitive(s.0)),
            change_flag: w.change_flag,
            primary_object_id: w.primary_object_id,
            merged_object_ids: w.merged_object_ids,
            new_object_id: w.new_object_id,
            number_of_properties_moved: w.number_of_properties_moved,
            from_object_id: w.from_object_id,
            to_object_id: w.to_object_id,
            association_type: w.association_type,
            association_removed: w.association_removed,
        })
        .collect())
}

#[cfg(test)]
mod tests;
