//! Tests for HubSpot signature verification and event parsing, anchored on the api-facts §6
//! vectors and a reference implementation written independently of the verifier.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use super::*;

const SECRET: &str = "my-client-secret";
const URI: &str = "https://hooks.example.test/hubspot?portal=123";
const TS: &str = "1700000000123";
const NOW: i64 = 1_700_000_000_123;
const BODY: &str = r#"[{"eventId":100,"subscriptionType":"contact.propertyChange","objectId":501,"propertyName":"email","propertyValue":"a@b.test","occurredAt":1700000000000,"attemptNumber":0}]"#;
const V3: &str = "Ci7jvepfENErAQlFZyl9MpaY+4FEdQ5XiNdVgxFDXjQ=";
const V1: &str = "84712bfb2134c56c9d6858cfb57a28800db746c3f93c6fdb0f90b4efa640e281";
const V2: &str = "e3381cdc8b200389e479f2eec21ada5a0b1518c69d5aa690fe6b14437f36e0bc";

fn config(allow_legacy: bool) -> HubspotVerifyConfig {
    HubspotVerifyConfig { client_secrets: vec![SecretString::from(SECRET)], allow_legacy }
}

fn v3_request<'a>(sig: &'a str, ts: &'a str, body: &'a [u8]) -> HubspotRequest<'a> {
    HubspotRequest {
        method: "POST",
        uri: URI,
        body,
        signature_v3: Some(sig),
        timestamp: Some(ts),
        signature: None,
        signature_version: None,
    }
}

fn legacy_request<'a>(sig: &'a str, version: &'a str, body: &'a [u8]) -> HubspotRequest<'a> {
    HubspotRequest {
        method: "POST",
        uri: URI,
        body,
        signature_v3: None,
        timestamp: None,
        signature: Some(sig),
        signature_version: Some(version),
    }
}

/// The test's own v3 recipe: one concatenated message, one HMAC, base64.
fn reference_v3(secret: &[u8], method: &str, uri: &str, body: &[u8], ts: &str) -> String {
    let mut msg = Vec::new();
    msg.extend_from_slice(method.as_bytes());
    msg.extend_from_slice(uri.as_bytes());
    msg.extend_from_slice(body);
    msg.extend_from_slice(ts.as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(&msg);
    BASE64.encode(mac.finalize().into_bytes())
}

fn reference_v2(secret: &str, method: &str, uri: &str, body: &[u8]) -> String {
    let mut msg = format!("{secret}{method}{uri}").into_bytes();
    msg.extend_from_slice(body);
    hex::encode(Sha256::digest(&msg))
}

#[test]
fn reference_implementation_matches_the_api_facts_vectors() {
    // Guards the property test below: its oracle must agree with HubSpot's published recipe.
    assert_eq!(reference_v3(SECRET.as_bytes(), "POST", URI, BODY.as_bytes(), TS), V3);
    assert_eq!(reference_v2(SECRET, "POST", URI, BODY.as_bytes()), V2);
}

#[test]
fn sign_v3_matches_the_api_facts_vector() {
    assert_eq!(sign_v3(SECRET, "POST", URI, BODY.as_bytes(), TS), V3);
}

#[test]
fn v3_vector_verifies() {
    let body = BODY.as_bytes();
    let verified = verify(&config(false), &v3_request(V3, TS, body), NOW).unwrap();
    assert_eq!(verified.raw(), body);
}

#[test]
fn v1_vector_verifies_only_when_legacy_is_allowed() {
    let req = legacy_request(V1, "v1", BODY.as_bytes());
    assert!(verify(&config(true), &req, NOW).is_ok());
    assert_eq!(verify(&config(false), &req, NOW).unwrap_err(), WebhookError::BadSignature);
    // Upper-case hex is the same signature.
    let upper = V1.to_uppercase();
    assert!(verify(&config(true), &legacy_request(&upper, "v1", BODY.as_bytes()), NOW).is_ok());
}

#[test]
fn v2_vector_verifies_only_when_legacy_is_allowed() {
    let req = legacy_request(V2, "v2", BODY.as_bytes());
    assert!(verify(&config(true), &req, NOW).is_ok());
    assert_eq!(verify(&config(false), &req, NOW).unwrap_err(), WebhookError::BadSignature);
}

#[test]
fn legacy_versions_are_not_interchangeable() {
    assert!(verify(&config(true), &legacy_request(V1, "v2", BODY.as_bytes()), NOW).is_err());
    assert!(verify(&config(true), &legacy_request(V2, "v1", BODY.as_bytes()), NOW).is_err());
    assert!(verify(&config(true), &legacy_request(V2, "v9", BODY.as_bytes()), NOW).is_err());
}

#[test]
fn a_present_v3_header_is_never_downgraded_to_legacy() {
    let mut req = legacy_request(V1, "v1", BODY.as_bytes());
    req.signature_v3 = Some("AAAA");
    req.timestamp = Some(TS);
    assert_eq!(verify(&config(true), &req, NOW).unwrap_err(), WebhookError::BadSignature);
}

#[test]
fn forged_truncated_and_empty_signatures_are_rejected() {
    let body = BODY.as_bytes();
    let forged = "Ci7jvepfENErAQlFZyl9MpaY+4FEdQ5XiNdVgxFDXjR=";
    let truncated = &V3[..V3.len() - 4];
    let half = BASE64.encode(&BASE64.decode(V3).unwrap()[..16]);
    for sig in [forged, truncated, half.as_str(), "", "v1,", "=", "not base64!"] {
        assert_eq!(
            verify(&config(true), &v3_request(sig, TS, body), NOW).unwrap_err(),
            WebhookError::BadSignature,
            "signature {sig:?}"
        );
    }
    for sig in ["", "v1,", &V1[..62], &V1[..V1.len() - 1]] {
        let req = legacy_request(sig, "v1", body);
        assert_eq!(verify(&config(true), &req, NOW).unwrap_err(), WebhookError::BadSignature);
    }
}

#[test]
fn missing_headers_are_rejected() {
    let body = BODY.as_bytes();
    let mut req = v3_request(V3, TS, body);
    req.timestamp = None;
    assert_eq!(verify(&config(true), &req, NOW).unwrap_err(), WebhookError::BadSignature);
    let mut req = v3_request(V3, TS, body);
    req.signature_v3 = None;
    assert_eq!(verify(&config(true), &req, NOW).unwrap_err(), WebhookError::BadSignature);
    for ts in ["", "+1700000000123", "1700000000123.0", "abc", "99999999999999999999999"] {
        let req = v3_request(V3, ts, body);
        assert_eq!(verify(&config(false), &req, NOW).unwrap_err(), WebhookError::BadSignature);
    }
}

#[test]
fn wrong_secret_is_rejected_and_rotation_accepts_either() {
    let req = v3_request(V3, TS, BODY.as_bytes());
    let wrong = HubspotVerifyConfig {
        client_secrets: vec![SecretString::from("my-client-secreT")],
        allow_legacy: true,
    };
    assert_eq!(verify(&wrong, &req, NOW).unwrap_err(), WebhookError::BadSignature);
    let none = HubspotVerifyConfig { client_secrets: vec![], allow_legacy: true };
    assert_eq!(verify(&none, &req, NOW).unwrap_err(), WebhookError::BadSignature);
    let rotating = HubspotVerifyConfig {
        client_secrets: vec![SecretString::from("new-secret"), SecretString::from(SECRET)],
        allow_legacy: false,
    };
    assert!(verify(&rotating, &req, NOW).is_ok());
}

#[test]
fn stale_and_future_timestamps_are_rejected_at_five_minutes() {
    let req = v3_request(V3, TS, BODY.as_bytes());
    let skew = MAX_SKEW_MS as i64;
    assert!(verify(&config(false), &req, NOW + skew).is_ok());
    assert!(verify(&config(false), &req, NOW - skew).is_ok());
    // now is more than 5 min after the timestamp: stale.
    assert_eq!(verify(&config(false), &req, NOW + skew + 1).unwrap_err(), WebhookError::Stale);
    // now is more than 5 min before the timestamp: from the future.
    assert_eq!(verify(&config(false), &req, NOW - skew - 1).unwrap_err(), WebhookError::Stale);
    assert_eq!(verify(&config(false), &req, i64::MIN).unwrap_err(), WebhookError::Stale);
    assert_eq!(verify(&config(false), &req, i64::MAX).unwrap_err(), WebhookError::Stale);
}

#[test]
fn a_body_tampered_by_one_byte_is_rejected() {
    let mut body = BODY.as_bytes().to_vec();
    body[40] ^= 0x01;
    assert_eq!(
        verify(&config(true), &v3_request(V3, TS, &body), NOW).unwrap_err(),
        WebhookError::BadSignature
    );
    assert!(verify(&config(true), &legacy_request(V1, "v1", &body), NOW).is_err());
    assert!(verify(&config(true), &legacy_request(V2, "v2", &body), NOW).is_err());
    let mut longer = BODY.as_bytes().to_vec();
    longer.push(b' ');
    assert!(verify(&config(true), &v3_request(V3, TS, &longer), NOW).is_err());
}

#[test]
fn a_signature_over_the_decoded_or_the_raw_uri_verifies() {
    let raw_uri = "https://hooks.example.test/hubspot?next=%2Fleads%3Fa%3D1&x=%20%25";
    // `%3D` (`=`), `%20` and `%25` are not in HubSpot's list and stay escaped.
    let decoded = "https://hooks.example.test/hubspot?next=/leads?a%3D1&x=%20%25";
    assert_eq!(decode_signed_uri(raw_uri), decoded);
    let body = BODY.as_bytes();
    for signed_over in [raw_uri, decoded] {
        let sig = reference_v3(SECRET.as_bytes(), "POST", signed_over, body, TS);
        let mut req = v3_request(&sig, TS, body);
        req.uri = raw_uri;
        assert!(verify(&config(false), &req, NOW).is_ok(), "signed over {signed_over}");
    }
    // A signature over some other decoding (here `%20` decoded too) is not accepted.
    let other = reference_v3(SECRET.as_bytes(), "POST", &decoded.replace("%20", " "), body, TS);
    let mut req = v3_request(&other, TS, body);
    req.uri = raw_uri;
    assert!(verify(&config(false), &req, NOW).is_err());
}

#[test]
fn decoding_handles_lower_case_and_stray_percent_signs() {
    assert_eq!(decode_signed_uri("a%3ab%2c%"), "a:b,%");
    assert_eq!(decode_signed_uri("%2"), "%2");
    assert_eq!(decode_signed_uri("%%40"), "%@");
    assert_eq!(decode_signed_uri("%é"), "%é");
}

#[test]
fn oversized_bodies_are_refused_before_verification() {
    let body = vec![b' '; crate::ingest::webhook::MAX_BODY_BYTES + 1];
    let sig = reference_v3(SECRET.as_bytes(), "POST", URI, &body, TS);
    assert_eq!(
        verify(&config(false), &v3_request(&sig, TS, &body), NOW).unwrap_err(),
        WebhookError::TooLarge
    );
}

#[test]
fn from_headers_reads_the_signature_headers() {
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("X-HubSpot-Signature-v3", V3.parse().unwrap());
    headers.insert("X-HubSpot-Request-Timestamp", TS.parse().unwrap());
    let req = HubspotRequest::from_headers("POST", URI, &headers, BODY.as_bytes());
    assert_eq!(req.signature_v3, Some(V3));
    assert_eq!(req.timestamp, Some(TS));
    assert!(verify(&config(false), &req, NOW).is_ok());
}

const FULL_BODY: &str = r#"[
 {"eventId":1,"subscriptionId":11,"portalId":62515,"appId":7,"occurredAt":1700000000000,
  "subscriptionType":"contact.propertyChange","attemptNumber":0,"objectId":123,
  "changeSource":"CRM_UI","propertyName":"email","propertyValue":"jane@example.test"},
 {"eventId":2,"subscriptionId":12,"portalId":62515,"appId":7,"occurredAt":1700000000001,
  "subscriptionType":"contact.merge","attemptNumber":2,"objectId":124,"changeSource":"CRM_UI",
  "primaryObjectId":124,"mergedObjectIds":[125,126],"newObjectId":124,
  "numberOfPropertiesMoved":3,"futureField":{"nested":true}},
 {"eventId":3,"portalId":62515,"occurredAt":1700000000002,"subscriptionType":"contact.creation",
  "attemptNumber":0,"objectId":127,"changeFlag":"CREATED","propertyValue":42,"sourceId":99}
]"#;

fn verified_events(body: &str) -> Result<Vec<HubspotEvent>, WebhookError> {
    let sig = reference_v3(SECRET.as_bytes(), "POST", URI, body.as_bytes(), TS);
    verify_and_parse(&config(false), &v3_request(&sig, TS, body.as_bytes()), NOW)
}

#[test]
fn events_parse_after_verification() {
    let events = verified_events(FULL_BODY).unwrap();
    assert_eq!(events.len(), 3);
    let e = &events[0];
    assert_eq!((e.event_id, e.portal_id, e.object_id), (1, 62515, 123));
    assert_eq!(e.subscription_type, "contact.propertyChange");
    assert_eq!(e.property_name.as_deref(), Some("email"));
    assert_eq!(e.property_value, Some(Sensitive("jane@example.test".into())));
    assert_eq!(e.change_source.as_deref(), Some("CRM_UI"));
    assert_eq!(e.dedupe_key(), "hubspot:62515:1");
    let m = &events[1];
    assert_eq!(m.attempt_number, 2);
    assert_eq!(m.primary_object_id, Some(124));
    assert_eq!(m.merged_object_ids, vec![125, 126]);
    assert_eq!(m.number_of_properties_moved, Some(3));
    let c = &events[2];
    assert_eq!(c.change_flag.as_deref(), Some("CREATED"));
    assert_eq!(c.property_value, Some(Sensitive("42".into())));
    assert_eq!(c.source_id.as_deref(), Some("99"));
    assert!(c.merged_object_ids.is_empty());
}

#[test]
fn events_never_print_property_values() {
    let events = verified_events(FULL_BODY).unwrap();
    let printed = format!("{events:?}");
    assert!(!printed.contains("jane@example.test"), "{printed}");
}

#[test]
fn a_bad_signature_wins_over_a_malformed_body() {
    // Nothing about the body is looked at until the signature verified.
    let req = v3_request(V3, TS, b"not json");
    assert_eq!(
        verify_and_parse(&config(false), &req, NOW).unwrap_err(),
        WebhookError::BadSignature
    );
}

#[test]
fn malformed_bodies_are_rejected_without_quoting_them() {
    let cases = [
        "",
        "{}",
        r#"{"eventId":1}"#,
        "[",
        r#"[{"eventId":"jane@example.test","portalId":1,"occurredAt":1,"subscriptionType":"x","objectId":1}]"#,
        r#"[{"portalId":1,"occurredAt":1,"subscriptionType":"x","objectId":1}]"#,
        r#"[{"eventId":1,"portalId":1,"occurredAt":1,"subscriptionType":"x","objectId":1,"propertyValue":{"a":"jane@example.test"}}]"#,
    ];
    for body in cases {
        let err = verified_events(body).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST, "{body}");
        assert!(!err.to_string().contains("jane"), "{err}");
    }
    assert_eq!(verified_events("[]").unwrap(), vec![]);
}

fn flip_one_byte(bytes: &[u8], index: usize, xor: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let i = index % out.len();
    out[i] ^= xor;
    out
}

proptest! {
    #[test]
    fn reference_signatures_verify_and_any_single_byte_change_fails(
        secret in "[ -~]{1,64}",
        body in proptest::collection::vec(any::<u8>(), 1..512),
        path in "[a-z0-9/]{0,32}",
        query in "[a-z0-9=&]{0,16}",
        ts_offset in -300_000i64..=300_000,
        index in any::<usize>(),
        xor in 1u8..=255,
    ) {
        let uri = format!("https://hooks.example.test/{path}?{query}");
        let ts = (NOW + ts_offset).to_string();
        let cfg = HubspotVerifyConfig {
            client_secrets: vec![SecretString::from(secret.clone())],
            allow_legacy: false,
        };
        let sig = reference_v3(secret.as_bytes(), "POST", &uri, &body, &ts);
        let req = HubspotRequest {
            method: "POST", uri: &uri, body: &body, signature_v3: Some(&sig),
            timestamp: Some(&ts), signature: None, signature_version: None,
        };
        prop_assert!(verify(&cfg, &req, NOW).is_ok());

        let body2 = flip_one_byte(&body, index, xor);
        prop_assert_eq!(
            verify(&cfg, &HubspotRequest { body: &body2, ..req }, NOW).unwrap_err(),
            WebhookError::BadSignature
        );

        // Changing one URI byte to another printable byte that is not `%`, so the change
        // cannot be undone by percent-decoding.
        let mut uri_bytes = uri.clone().into_bytes();
        let i = index % uri_bytes.len();
        let mut replacement = b' ' + ((uri_bytes[i] - b' ' + (xor % 94) + 1) % 95);
        if replacement == b'%' { replacement = if uri_bytes[i] == b'#' { b'!' } else { b'#' }; }
        uri_bytes[i] = replacement;
        let uri2 = String::from_utf8(uri_bytes).unwrap();
        prop_assert_ne!(&uri2, &uri);
        prop_assert_eq!(
            verify(&cfg, &HubspotRequest { uri: &uri2, ..req }, NOW).unwrap_err(),
            WebhookError::BadSignature
        );

        // One timestamp digit changed to another digit: either outside the window or a
        // different signed string.
        let mut ts_bytes = ts.clone().into_bytes();
        let j = index % ts_bytes.len();
        ts_bytes[j] = b'0' + ((ts_bytes[j] - b'0' + (xor % 9) + 1) % 10);
        let ts2 = String::from_utf8(ts_bytes).unwrap();
        prop_assert_ne!(&ts2, &ts);
        let changed_ts = HubspotRequest { timestamp: Some(&ts2), ..req };
        prop_assert!(verify(&cfg, &changed_ts, NOW).is_err());
    }
}
