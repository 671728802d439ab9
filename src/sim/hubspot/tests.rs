//! HTTP-level tests of the HubSpot simulator: a real socket on 127.0.0.1:0 and reqwest, so
//! status codes, headers and bodies are checked as a client sees them.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

use super::{Fault, HubspotSim, HubspotSimOptions};

const TOKEN: &str = "pat-na1-test-token";

async fn spawn(opts: HubspotSimOptions) -> (HubspotSim, Api) {
    let sim = HubspotSim::new(HubspotSimOptions { token: TOKEN.into(), ..opts });
    sim.start("127.0.0.1:0").await.expect("bind a local port");
    let api = Api { client: Client::new(), base: sim.base_url() };
    (sim, api)
}

struct Api {
    client: Client,
    base: String,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}/crm/v3/objects/contacts{path}", self.base)
    }

    async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).bearer_auth(TOKEN).send().await.expect("request")
    }

    async fn post(&self, path: &str, body: Value) -> Response {
        self.client.post(self.url(path)).bearer_auth(TOKEN).json(&body).send().await.expect("post")
    }

    async fn patch(&self, path: &str, body: Value) -> Response {
        self.client
            .patch(self.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("patch")
    }

    async fn raw_post(&self, url: &str) -> Response {
        self.client.post(url).bearer_auth(TOKEN).send().await.expect("post")
    }
}

async fn body(resp: Response) -> Value {
    resp.json().await.expect("a JSON body")
}

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[tokio::test]
async fn auth_failure_has_hubspot_shape() {
    let (_sim, api) = spawn(HubspotSimOptions::default()).await;
    for auth in [None, Some("Bearer wrong-token"), Some(TOKEN)] {
        let mut req = api.client.get(api.url(""));
        if let Some(value) = auth {
            req = req.header("authorization", value);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "auth header {auth:?}");
        assert!(is_json(&resp));
        let b = body(resp).await;
        assert_eq!(b["status"], "error");
        assert_eq!(b["category"], "INVALID_AUTHENTICATION");
        assert!(b["message"].as_str().unwrap().starts_with("Authentication credentials not found"));
        uuid::Uuid::parse_str(b["correlationId"].as_str().unwrap()).expect("uuid");
    }
    let ok = api.get("").await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn create_returns_201_and_conflicts_case_insensitively() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    let resp = api
        .post("", json!({"properties": {"email": " Jane.Doe@Example.COM ", "firstname": "Jane"}}))
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created = body(resp).await;
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.parse::<u64>().is_ok());
    assert_eq!(created["properties"]["email"], "jane.doe@example.com");
    assert_eq!(created["archived"], false);
    let stamp = created["properties"]["createdate"].as_str().unwrap();
    assert_eq!(stamp.len(), "2024-05-01T10:00:00.123Z".len());
    assert!(stamp.ends_with('Z'));
    assert_eq!(created["createdAt"], created["properties"]["createdate"]);

    let dup = api.post("", json!({"properties": {"email": "JANE.DOE@example.com"}})).await;
    assert_eq!(dup.status(), StatusCode::CONFLICT);
    assert!(is_json(&dup));
    let b = body(dup).await;
    assert_eq!(b["category"], "CONFLICT");
    assert_eq!(b["message"], format!("Contact already exists. Existing ID: {id}"));

    // Percent-encoded email path with idProperty; default properties include unset ones as null.
    let got = api.get("/Jane.Doe%40example.com?idProperty=email").await;
    assert_eq!(got.status(), StatusCode::OK);
    let got = body(got).await;
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["properties"]["lastname"], Value::Null);
    assert_eq!(got["properties"]["hs_object_id"], id.as_str());

    let missing = api.get("/999999").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(is_json(&missing));
    assert_eq!(sim.stats().records_created, 1);
}

#[tokio::test]
async fn batch_create_with_existing_email_fails_whole_batch() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    let existing = sim.insert(props(&[("email", "a@x.test")])).unwrap();
    let resp = api
        .post(
            "/batch/create",
            json!({"inputs": [
                {"properties": {"email": "new@x.test"}},
                {"properties": {"email": "A@X.test"}}
            ]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(
        body(resp).await["message"],
        format!("Contact already exists. Existing ID: {existing}")
    );
    assert_eq!(sim.all().len(), 1, "nothing created");

    let ok =
        api.post("/batch/create", json!({"inputs": [{"properties": {"email": "b@x.test"}}]})).await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    let b = body(ok).await;
    assert_eq!(b["status"], "COMPLETE");
    assert_eq!(b["results"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn batch_upsert_reports_new_true_and_false() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    let existing = sim.insert(props(&[("email", "old@x.test"), ("firstname", "Old")])).unwrap();
    let resp = api
        .post(
            "/batch/upsert",
            json!({"inputs": [
                {"id": "OLD@x.test", "idProperty": "email", "properties": {"firstname": "Renamed"}},
                {"id": "fresh@x.test", "idProperty": "email", "properties": {"firstname": "Fresh"}}
            ]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let b = body(resp).await;
    let results = b["results"].as_array().unwrap();
    let by_email =
        |e: &str| results.iter().find(|r| r["properties"]["email"] == e).unwrap().clone();
    let old = by_email("old@x.test");
    assert_eq!(old["new"], false);
    assert_eq!(old["id"], existing.as_str());
    let fresh = by_email("fresh@x.test");
    assert_eq!(fresh["new"], true);
    assert_eq!(sim.get(&existing).unwrap()["firstname"].as_deref(), Some("Renamed"));
    assert_eq!(sim.all().len(), 2);

    let bad = api
        .post(
            "/batch/upsert",
            json!({"inputs": [{"id": "1", "idProperty": "hs_object_id", "properties": {}}]}),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn batch_update_unknown_id_gives_207_with_context_ids() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    let id = sim.insert(props(&[("email", "u@x.test")])).unwrap();
    let resp = api
        .post(
            "/batch/update",
            json!({"inputs": [
                {"id": id, "properties": {"jobtitle": "CTO"}},
                {"id": "999999", "properties": {"jobtitle": "CEO"}}
            ]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::MULTI_STATUS);
    let b = body(resp).await;
    assert_eq!(b["numErrors"], 1);
    assert_eq!(b["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(b["errors"][0]["context"]["ids"], json!(["999999"]));
    assert_eq!(b["results"][0]["id"], id.as_str());
    assert_eq!(sim.get(&id).unwrap()["jobtitle"].as_deref(), Some("CTO"));

    let all_known = api
        .post("/batch/update", json!({"inputs": [{"id": id, "properties": {"city": "Oslo"}}]}))
        .await;
    assert_eq!(all_known.status(), StatusCode::OK);

    let by_email = api
        .post(
            "/batch/update",
            json!({"inputs": [{"id": "u@x.test", "idProperty": "email", "properties": {}}]}),
        )
        .await;
    assert_eq!(by_email.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn batch_limits_and_duplicates_are_400() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    let inputs: Vec<Value> =
        (0..101).map(|i| json!({"properties": {"email": format!("p{i}@x.test")}})).collect();
    let resp = api.post("/batch/create", json!({ "inputs": inputs })).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(resp).await["category"], "VALIDATION_ERROR");
    assert!(sim.all().is_empty());

    let hundred: Vec<Value> = (0..100).map(|i| json!({"id": i.to_string()})).collect();
    let resp = api.post("/batch/read", json!({ "inputs": hundred })).await;
    assert_eq!(resp.status(), StatusCode::MULTI_STATUS, "100 inputs are allowed, all missing");

    let id = sim.insert(props(&[("email", "d@x.test")])).unwrap();
    let resp = api
        .post(
            "/batch/update",
            json!({"inputs": [{"id": id, "properties": {}}, {"id": id, "properties": {}}]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(body(resp).await["message"].as_str().unwrap().contains("Duplicate IDs"));
}

#[tokio::test]
async fn lifecyclestage_only_moves_forward_through_the_api() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    let id =
        sim.insert(props(&[("email", "l@x.test"), ("lifecyclestage", "opportunity")])).unwrap();
    let before = sim.get(&id).unwrap()["lastmodifieddate"].clone();
    tokio::time::sleep(Duration::from_millis(3)).await;

    let resp =
        api.patch(&format!("/{id}"), json!({"properties": {"lifecyclestage": "lead"}})).await;
    assert_eq!(resp.status(), StatusCode::OK, "backward writes are accepted and ignored");
    let now = sim.get(&id).unwrap();
    assert_eq!(now["lifecyclestage"].as_deref(), Some("opportunity"));
    assert_eq!(now["lastmodifieddate"], before, "nothing changed, so no new modification time");

    let resp =
        api.patch(&format!("/{id}"), json!({"properties": {"lifecyclestage": "customer"}})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let now = sim.get(&id).unwrap();
    assert_eq!(now["lifecyclestage"].as_deref(), Some("customer"));
    assert_ne!(now["lastmodifieddate"], before);

    api.patch(&format!("/{id}"), json!({"properties": {"lifecyclestage": ""}})).await;
    assert_eq!(sim.get(&id).unwrap()["lifecyclestage"], None);
    api.patch(&format!("/{id}"), json!({"properties": {"lifecyclestage": "lead"}})).await;
    assert_eq!(sim.get(&id).unwrap()["lifecyclestage"].as_deref(), Some("lead"));

    // The UI may go backwards.
    sim.ui_update(&id, props(&[("lifecyclestage", "subscriber")])).unwrap();
    assert_eq!(sim.get(&id).unwrap()["lifecyclestage"].as_deref(), Some("subscriber"));

    let bad = api.patch(&format!("/{id}"), json!({"properties": {"lifecyclestage": "Lead"}})).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let b = body(bad).await;
    assert_eq!(b["category"], "VALIDATION_ERROR");
    assert_eq!(b["errors"][0]["code"], "INVALID_OPTION");
}

#[tokio::test]
async fn read_only_and_unknown_properties_are_rejected() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    let id = sim.insert(props(&[("email", "r@x.test")])).unwrap();
    let resp =
        api.patch(&format!("/{id}"), json!({"properties": {"hs_email_optout": "false"}})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let b = body(resp).await;
    assert_eq!(b["category"], "VALIDATION_ERROR");
    assert_eq!(b["errors"][0]["code"], "READ_ONLY_VALUE");
    assert!(b["message"].as_str().unwrap().starts_with("Property values were not valid"));

    let resp =
        api.post("", json!({"properties": {"email": "n@x.test", "favourite_colour": "red"}})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let b = body(resp).await;
    assert_eq!(b["errors"][0]["code"], "PROPERTY_DOESNT_EXIST");
    assert_eq!(b["errors"][0]["context"]["propertyName"], json!(["favourite_colour"]));

    // One invalid input fails the whole batch; the valid one is not applied.
    let resp = api
        .post(
            "/batch/update",
            json!({"inputs": [
                {"id": id, "properties": {"firstname": "Ok"}},
                {"id": id.clone() + "0", "properties": {"hs_lead_status": "nope"}}
            ]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sim.get(&id).unwrap()["firstname"], None);
    assert!(sim.ui_update(&id, props(&[("hs_email_optout", "true")])).is_err());
    assert!(sim.insert(props(&[("email", "not-an-email")])).is_err());
}

#[tokio::test]
async fn last_contacted_moves_only_with_a_logged_contact_and_cannot_be_written() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    let id = sim.insert(props(&[("email", "lc@x.test")])).unwrap();
    let resp = api
        .patch(
            &format!("/{id}"),
            json!({"properties": {"notes_last_contacted": "2026-11-20T10:00:00.000Z"}}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(resp).await["errors"][0]["code"], "READ_ONLY_VALUE");
    let ui = props(&[("notes_last_contacted", "2026-11-20T10:00:00.000Z")]);
    assert!(sim.ui_update(&id, ui).is_err(), "not in the UI either: HubSpot computes it");
    assert_eq!(sim.get(&id).unwrap()["notes_last_contacted"], None);

    let before = sim.get(&id).unwrap()["lastmodifieddate"].clone();
    let call = 1_795_000_000_000; // 2026-11-18
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert_eq!(sim.log_engagement(&id, Some(call)), Ok(true));
    let after = sim.get(&id).unwrap();
    assert_eq!(after["notes_last_contacted"].as_deref(), Some(super::store::iso_ms(call).as_str()));
    assert_ne!(after["lastmodifieddate"], before, "a computed change still moves the record");
    // An older contact logged later does not lower it; a newer one raises it.
    assert_eq!(sim.log_engagement(&id, Some(call - 60_000)), Ok(false));
    assert_eq!(sim.log_engagement(&id, Some(call + 60_000)), Ok(true));
    let held = sim.get(&id).unwrap()["notes_last_contacted"].clone();
    assert_eq!(held.as_deref(), Some(super::store::iso_ms(call + 60_000).as_str()));
    assert!(sim.log_engagement("999999", None).is_err());
    // Read through the API like any property.
    let resp = api.get(&format!("/{id}?properties=notes_last_contacted")).await;
    let b = body(resp).await;
    assert_eq!(b["properties"]["notes_last_contacted"], json!(super::store::iso_ms(call + 60_000)));
}

/// Pages a `lastmodifieddate GTE watermark` search sorted ascending, as the connector will.
#[tokio::test]
async fn search_by_lastmodifieddate_pages_in_order() {
    let (sim, api) = spawn(HubspotSimOptions::unlimited()).await;
    let ids: Vec<String> = (0..20)
        .map(|i| sim.insert(props(&[("email", &format!("s{i}@x.test"))])).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let watermark = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(2)).await;
    // Touch 12 records in reverse id order so that sort order differs from id order.
    let touched: Vec<String> = ids.iter().rev().take(12).cloned().collect();
    for id in &touched {
        sim.ui_update(id, props(&[("firstname", "Changed")])).unwrap();
    }

    let mut seen = Vec::new();
    let mut stamps = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut req = json!({
            "filterGroups": [{"filters": [
                {"propertyName": "lastmodifieddate", "operator": "GTE", "value": watermark.to_string()}
            ]}],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
            "properties": ["email", "lastmodifieddate"],
            "limit": 5,
        });
        if let Some(a) = &after {
            req["after"] = json!(a);
        }
        let resp = api.post("/search", req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(header(&resp, "x-hubspot-ratelimit-max").is_none(), "search has no limit headers");
        let b = body(resp).await;
        assert_eq!(b["total"], 12);
        pages += 1;
        for r in b["results"].as_array().unwrap() {
            seen.push(r["id"].as_str().unwrap().to_string());
            stamps.push(r["properties"]["lastmodifieddate"].as_str().unwrap().to_string());
        }
        match b.get("paging") {
            Some(p) => after = Some(p["next"]["after"].as_str().unwrap().to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut expected = touched.clone();
    expected.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got, expected);
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "ascending lastmodifieddate");

    // ISO watermark and the string sort form give the same set, newest first.
    let iso = super::store::iso_ms(watermark);
    let resp = api
        .post(
            "/search",
            json!({
                "filterGroups": [{"filters": [
                    {"propertyName": "lastmodifieddate", "operator": "GTE", "value": iso}
                ]}],
                "sorts": ["-lastmodifieddate"],
                "limit": 100,
            }),
        )
        .await;
    let b = body(resp).await;
    assert_eq!(b["total"], 12);
    assert!(b.get("paging").is_none());
    let first = b["results"][0]["properties"]["lastmodifieddate"].as_str().unwrap().to_string();
    assert_eq!(Some(&first), stamps.iter().max());
}

#[tokio::test]
async fn search_refuses_to_page_past_10000() {
    let (sim, api) = spawn(HubspotSimOptions::unlimited()).await;
    for i in 0..10_050 {
        sim.insert(props(&[("email", &format!("bulk{i}@x.test"))])).unwrap();
    }
    let resp = api.post("/search", json!({"limit": 200, "after": "9800"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let b = body(resp).await;
    assert_eq!(b["total"], 10_050);
    assert_eq!(b["results"].as_array().unwrap().len(), 200);
    // HubSpot still hands out the cursor that the next call will refuse.
    assert_eq!(b["paging"]["next"]["after"], "10000");

    let resp = api.post("/search", json!({"limit": 200, "after": "9900"})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(resp).await["category"], "VALIDATION_ERROR");
    let resp = api.post("/search", json!({"limit": 201})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn search_filters_and_caps() {
    let (sim, api) = spawn(HubspotSimOptions::unlimited()).await;
    let a = sim
        .insert(props(&[
            ("email", "ann@acme.test"),
            ("lifecyclestage", "lead"),
            ("company", "Acme"),
        ]))
        .unwrap();
    let b =
        sim.insert(props(&[("email", "bob@other.test"), ("lifecyclestage", "customer")])).unwrap();
    let c = sim.insert(props(&[("email", "cy@acme.test")])).unwrap();
    let search = |filters: Value| {
        let api = &api;
        async move {
            let resp = api.post("/search", json!({"filterGroups": [{"filters": filters}]})).await;
            assert_eq!(resp.status(), StatusCode::OK);
            let b = body(resp).await;
            b["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        search(
            json!([{"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "*@acme.test"}])
        )
        .await,
        vec![a.clone(), c.clone()]
    );
    assert_eq!(
        search(json!([{"propertyName": "email", "operator": "EQ", "value": "BOB@other.test"}]))
            .await,
        vec![b.clone()]
    );
    assert_eq!(search(json!([{"propertyName": "lifecyclestage", "operator": "IN", "values": ["lead", "customer"]}])).await, vec![a.clone(), b.clone()]);
    assert!(
        search(json!([{"propertyName": "company", "operator": "IN", "values": ["Acme"]}]))
            .await
            .is_empty(),
        "IN values must be lower-case"
    );
    assert_eq!(
        search(json!([{"propertyName": "lifecyclestage", "operator": "NOT_HAS_PROPERTY"}])).await,
        vec![c.clone()]
    );
    assert_eq!(
        search(json!([{"propertyName": "hs_object_id", "operator": "GT", "value": a}])).await,
        vec![b.clone(), c.clone()]
    );
    assert_eq!(search(json!([{"propertyName": "hs_object_id", "operator": "BETWEEN", "value": b, "highValue": c}])).await, vec![b.clone(), c.clone()]);

    let seven: Vec<Value> =
        (0..7).map(|_| json!({"propertyName": "email", "operator": "HAS_PROPERTY"})).collect();
    let resp = api.post("/search", json!({"filterGroups": [{"filters": seven}]})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let six = json!({"filters": (0..6).map(|_| json!({"propertyName": "email", "operator": "HAS_PROPERTY"})).collect::<Vec<_>>()});
    let resp = api
        .post("/search", json!({"filterGroups": [six.clone(), six.clone(), six.clone(), six]}))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "24 filters in total is over 18");
    let resp = api
        .post("/search", json!({"filterGroups": [{"filters": [{"propertyName": "nope", "operator": "HAS_PROPERTY"}]}]}))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn search_is_limited_to_four_per_second_with_secondly_policy() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let resp = api.post("/search", json!({})).await;
        statuses.push(resp.status());
        last = Some(resp);
    }
    // Five local calls take milliseconds; the fifth falls in the same second as the first.
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(&statuses[..4], &[StatusCode::OK; 4]);
    let last = last.unwrap();
    assert_eq!(last.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(is_json(&last));
    let b = body(last).await;
    assert_eq!(b["policyName"], "SECONDLY");
    assert_eq!(b["errorType"], "RATE_LIMIT");
    assert_eq!(b["message"], "You have reached your secondly limit.");
    assert_eq!(sim.stats().rate_limited, 1);
    assert_eq!(sim.stats().search_calls, 4);
    // Ordinary calls are not held back by the search limit.
    assert_eq!(api.get("").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn ten_second_window_limits_and_reports_in_headers() {
    let (sim, api) = spawn(HubspotSimOptions {
        rate_limit_per_10s: Some(3),
        daily_limit: Some(1_000),
        ..HubspotSimOptions::default()
    })
    .await;
    for remaining in ["2", "1", "0"] {
        let resp = api.get("").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "x-hubspot-ratelimit-max").as_deref(), Some("3"));
        assert_eq!(header(&resp, "x-hubspot-ratelimit-remaining").as_deref(), Some(remaining));
        assert_eq!(
            header(&resp, "x-hubspot-ratelimit-interval-milliseconds").as_deref(),
            Some("10000")
        );
        assert_eq!(header(&resp, "x-hubspot-ratelimit-daily").as_deref(), Some("1000"));
    }
    let resp = api.get("").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(is_json(&resp));
    assert_eq!(header(&resp, "x-hubspot-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(header(&resp, "x-hubspot-ratelimit-daily-remaining").as_deref(), Some("997"));
    let b = body(resp).await;
    assert_eq!(b["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(b["errorType"], "RATE_LIMIT");
    let stats = sim.stats();
    assert_eq!((stats.api_reads, stats.rate_limited), (3, 1));
}

#[tokio::test]
async fn daily_limit_answers_daily_policy() {
    let (_sim, api) =
        spawn(HubspotSimOptions { daily_limit: Some(1), ..HubspotSimOptions::default() }).await;
    assert_eq!(api.get("").await.status(), StatusCode::OK);
    let resp = api.get("").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body(resp).await["policyName"], "DAILY");
}

#[tokio::test]
async fn unsubscribe_all_sets_optout_and_cannot_be_undone() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    let id = sim.insert(props(&[("email", "opt@x.test")])).unwrap();
    let before = sim.get(&id).unwrap()["lastmodifieddate"].clone();
    tokio::time::sleep(Duration::from_millis(3)).await;
    let cp = format!("{}/communication-preferences/v4/statuses", api.base);

    let resp = api.raw_post(&format!("{cp}/Opt%40X.test/unsubscribe-all?channel=EMAIL")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body(resp).await["status"], "COMPLETE");
    let now = sim.get(&id).unwrap();
    assert_eq!(now["hs_email_optout"].as_deref(), Some("true"));
    assert_ne!(now["lastmodifieddate"], before);
    let got = body(api.get(&format!("/{id}?properties=hs_email_optout")).await).await;
    assert_eq!(got["properties"]["hs_email_optout"], "true");

    let status = api
        .client
        .get(format!("{cp}/opt@x.test?channel=EMAIL"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = body(status).await;
    assert!(status["results"].as_array().unwrap().iter().all(|r| r["status"] == "UNSUBSCRIBED"));

    let resub = api
        .client
        .post(format!("{cp}/opt@x.test"))
        .bearer_auth(TOKEN)
        .json(&json!({"channel": "EMAIL", "statusState": "SUBSCRIBED", "subscriptionId": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resub.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(resub).await["category"], "VALIDATION_ERROR");

    let no_channel = api.raw_post(&format!("{cp}/opt@x.test/unsubscribe-all")).await;
    assert_eq!(no_channel.status(), StatusCode::BAD_REQUEST);

    // The opt-out belongs to the address: a contact created later with it starts opted out.
    sim.ui_unsubscribe("later@x.test");
    let later = sim.insert(props(&[("email", "later@x.test")])).unwrap();
    assert_eq!(sim.get(&later).unwrap()["hs_email_optout"].as_deref(), Some("true"));
}

#[tokio::test]
async fn batch_unsubscribe_all_is_one_write_with_per_address_effect() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    let a = sim.insert(props(&[("email", "a@x.test")])).unwrap();
    let b = sim.insert(props(&[("email", "b@x.test")])).unwrap();
    // Already opted out: its lastmodifieddate must not move again.
    let c = sim.insert(props(&[("email", "c@x.test")])).unwrap();
    sim.ui_unsubscribe("c@x.test");
    let before_a = sim.get(&a).unwrap()["lastmodifieddate"].clone();
    let before_c = sim.get(&c).unwrap()["lastmodifieddate"].clone();
    tokio::time::sleep(Duration::from_millis(3)).await;
    let url = format!(
        "{}/communication-preferences/v4/statuses/batch/unsubscribe-all?channel=EMAIL",
        api.base
    );
    let post = |body: Value, url: String| {
        let client = api.client.clone();
        async move { client.post(url).bearer_auth(TOKEN).json(&body).send().await.expect("post") }
    };
    let writes_before = sim.stats().api_writes;

    let resp =
        post(json!({"inputs": ["A@X.test", "c@x.test", "nobody@x.test", "a@x.test"]}), url.clone())
            .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let got = body(resp).await;
    assert_eq!(got["status"], "COMPLETE");
    assert!(got.get("errors").is_none(), "{got}");
    let subscribers: Vec<&str> = got["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["subscriberIdString"].as_str().unwrap())
        .collect();
    assert_eq!(subscribers, vec!["a@x.test", "c@x.test", "nobody@x.test"]);
    for r in got["results"].as_array().unwrap() {
        let statuses = r["statuses"].as_array().unwrap();
        assert!(!statuses.is_empty());
        assert!(statuses.iter().all(|s| s["status"] == "UNSUBSCRIBED" && s["channel"] == "EMAIL"));
    }
    assert_eq!(got["results"][1]["statuses"][0]["setStatusSuccessReason"], "NO_STATUS_CHANGE");
    assert_eq!(sim.stats().api_writes, writes_before + 1);
    let now_a = sim.get(&a).unwrap();
    assert_eq!(now_a["hs_email_optout"].as_deref(), Some("true"));
    assert_ne!(now_a["lastmodifieddate"], before_a);
    assert_eq!(sim.get(&c).unwrap()["lastmodifieddate"], before_c);
    assert_ne!(sim.get(&b).unwrap()["hs_email_optout"].as_deref(), Some("true"));
    // Unknown addresses are recorded: a contact created later starts opted out.
    let later = sim.insert(props(&[("email", "nobody@x.test")])).unwrap();
    assert_eq!(sim.get(&later).unwrap()["hs_email_optout"].as_deref(), Some("true"));

    // A bad address fails alone with a 207 naming it; the others are applied.
    let resp = post(json!({"inputs": ["not-an-email", "b@x.test"]}), url.clone()).await;
    assert_eq!(resp.status(), StatusCode::MULTI_STATUS);
    let got = body(resp).await;
    assert_eq!(got["numErrors"], 1);
    assert_eq!(got["errors"][0]["category"], "VALIDATION_ERROR");
    assert_eq!(got["errors"][0]["context"]["ids"], json!(["not-an-email"]));
    assert_eq!(got["results"][0]["subscriberIdString"], "b@x.test");
    assert_eq!(sim.get(&b).unwrap()["hs_email_optout"].as_deref(), Some("true"));

    // Injected per-input faults apply here too.
    sim.inject(Fault::FailBatchInput { key: "D@x.test".into() });
    let resp = post(json!({"inputs": ["d@x.test", "e@x.test"]}), url.clone()).await;
    assert_eq!(resp.status(), StatusCode::MULTI_STATUS);
    let got = body(resp).await;
    assert_eq!(got["errors"][0]["category"], "INTERNAL_ERROR");
    assert_eq!(got["results"].as_array().unwrap().len(), 1);

    // More than 100 inputs, a missing or wrong channel, or non-string inputs: 400, no change.
    let many: Vec<String> = (0..101).map(|i| format!("m{i}@x.test")).collect();
    let resp = post(json!({ "inputs": many }), url.clone()).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(resp).await["category"], "VALIDATION_ERROR");
    let bare = url.replace("?channel=EMAIL", "");
    for target in [bare.clone(), format!("{bare}?channel=SMS")] {
        let resp = post(json!({"inputs": ["f@x.test"]}), target).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(resp).await["category"], "VALIDATION_ERROR");
    }
    let resp = post(json!({"inputs": [{"id": "f@x.test"}]}), url.clone()).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let f = sim.insert(props(&[("email", "f@x.test")])).unwrap();
    assert_ne!(sim.get(&f).unwrap()["hs_email_optout"].as_deref(), Some("true"));
    let m0 = sim.insert(props(&[("email", "m0@x.test")])).unwrap();
    assert_ne!(sim.get(&m0).unwrap()["hs_email_optout"].as_deref(), Some("true"));
}

#[tokio::test]
async fn injected_faults_answer_then_clear() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    sim.inject(Fault::ServerError { status: 503, count: 2 });
    for _ in 0..2 {
        let resp = api.get("").await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(is_json(&resp));
        assert_eq!(body(resp).await["status"], "error");
    }
    assert_eq!(api.get("").await.status(), StatusCode::OK);

    sim.inject(Fault::RateLimited { count: 1 });
    let resp = api.get("").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body(resp).await["policyName"], "TEN_SECONDLY_ROLLING");

    sim.inject(Fault::FailBatchInput { key: "Two@x.test".into() });
    let resp = api
        .post(
            "/batch/create",
            json!({"inputs": [
                {"properties": {"email": "one@x.test"}},
                {"properties": {"email": "two@x.test"}}
            ]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::MULTI_STATUS);
    let b = body(resp).await;
    assert_eq!(b["errors"][0]["context"]["ids"], json!(["two@x.test"]));
    assert_eq!(b["results"].as_array().unwrap().len(), 1);
    assert_eq!(sim.all().len(), 1);
    let stats = sim.stats();
    assert_eq!(stats.errors_returned, 3, "two 503s and one 429; a 207 is not an error status");
    assert_eq!(stats.records_created, 1);
}

#[tokio::test]
async fn search_index_lags_writes_by_the_configured_delay() {
    let (sim, api) = spawn(HubspotSimOptions {
        search_index_delay: Duration::from_millis(300),
        ..HubspotSimOptions::unlimited()
    })
    .await;
    let id = sim.insert(props(&[("email", "lag@x.test"), ("firstname", "Before")])).unwrap();
    let find = json!({"filterGroups": [{"filters": [
        {"propertyName": "firstname", "operator": "EQ", "value": "after"}
    ]}]});
    assert_eq!(body(api.post("/search", json!({})).await).await["total"], 0);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(body(api.post("/search", json!({})).await).await["total"], 1);

    let resp = api.patch(&format!("/{id}"), json!({"properties": {"firstname": "After"}})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        body(api.post("/search", find.clone()).await).await["total"],
        0,
        "old value still indexed"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(body(api.post("/search", find).await).await["total"], 1);
}

#[tokio::test]
async fn merged_ids_resolve_to_the_winner() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    let winner = sim.insert(props(&[("email", "w@x.test")])).unwrap();
    let loser = sim.insert(props(&[("email", "l@x.test"), ("phone", "123")])).unwrap();
    let resp =
        api.post("/merge", json!({"primaryObjectId": winner, "objectIdToMerge": loser})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let got = body(api.get(&format!("/{loser}")).await).await;
    assert_eq!(got["id"], winner.as_str());
    let full = sim.get(&winner).unwrap();
    assert_eq!(full["hs_merged_object_ids"].as_deref(), Some(loser.as_str()));
    assert_eq!(full["phone"].as_deref(), Some("123"));
    let by_old_email = api.get("/l@x.test?idProperty=email").await;
    assert_eq!(body(by_old_email).await["id"], winner.as_str());
    assert_eq!(sim.all().len(), 1);
}

#[tokio::test]
async fn property_history_dates_a_merge_and_each_change_newest_first() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    let winner = sim.insert(props(&[("email", "w@x.test"), ("firstname", "Ann")])).unwrap();
    let loser = sim.insert(props(&[("email", "l@x.test")])).unwrap();
    let resp =
        api.post("/merge", json!({"primaryObjectId": winner, "objectIdToMerge": loser})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let merged_at =
        body(api.get(&format!("/{winner}")).await).await["properties"]["lastmodifieddate"]
            .as_str()
            .unwrap()
            .to_string();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let edit = json!({"properties": {"firstname": "Anne"}});
    assert_eq!(api.patch(&format!("/{winner}"), edit).await.status(), StatusCode::OK);
    let read = json!({
        "inputs": [{"id": winner}],
        "properties": ["firstname"],
        "propertiesWithHistory": ["hs_merged_object_ids", "firstname", "email", "nonsense"],
    });
    let got = body(api.post("/batch/read", read).await).await;
    let record = &got["results"][0];
    let modified = record["properties"]["lastmodifieddate"].as_str().unwrap();
    assert!(modified > merged_at.as_str(), "the edit moved lastmodifieddate past the merge");
    let history = &record["propertiesWithHistory"];
    let merges = history["hs_merged_object_ids"].as_array().unwrap();
    assert_eq!(merges.len(), 1);
    assert_eq!(merges[0]["value"], loser.as_str());
    assert_eq!(merges[0]["timestamp"], merged_at.as_str(), "dated at the merge, not the edit");
    let names: Vec<&str> = history["firstname"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["value"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Anne", "Ann"], "newest first, the create's value last");
    assert_eq!(history["email"][0]["value"], "w@x.test");
    assert!(history.get("nonsense").is_none(), "unknown properties are left out");

    let q = format!("/{winner}?propertiesWithHistory=hs_merged_object_ids&properties=email");
    let one = body(api.get(&q).await).await;
    assert_eq!(one["propertiesWithHistory"]["hs_merged_object_ids"][0]["value"], loser.as_str());
    let plain = body(api.get(&format!("/{winner}")).await).await;
    assert!(plain.get("propertiesWithHistory").is_none(), "only when asked for");
}

#[tokio::test]
async fn list_pages_and_accepts_repeated_properties() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    for i in 0..3 {
        sim.insert(props(&[("email", &format!("p{i}@x.test")), ("company", "Acme")])).unwrap();
    }
    let b = body(api.get("?limit=2&properties=company&properties=email").await).await;
    assert_eq!(b["results"].as_array().unwrap().len(), 2);
    assert_eq!(b["results"][0]["properties"]["company"], "Acme");
    assert!(b["results"][0]["properties"].get("firstname").is_none());
    let after = b["paging"]["next"]["after"].as_str().unwrap().to_string();
    let b = body(api.get(&format!("?limit=2&after={after}&properties=company,email")).await).await;
    assert_eq!(b["results"].as_array().unwrap().len(), 1);
    assert!(b.get("paging").is_none());
    assert_eq!(api.get("?limit=101").await.status(), StatusCode::BAD_REQUEST);

    let id = sim.all()[0].0.clone();
    let resp =
        api.client.delete(api.url(&format!("/{id}"))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(api.get(&format!("/{id}")).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(api.get(&format!("/{id}?archived=true")).await.status(), StatusCode::OK);
    assert_eq!(sim.all().len(), 2);
}

#[tokio::test]
async fn malformed_json_gets_a_json_400() {
    let (_sim, api) = spawn(HubspotSimOptions::default()).await;
    let resp = api
        .client
        .post(api.url(""))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(is_json(&resp));
    assert_eq!(body(resp).await["category"], "VALIDATION_ERROR");
}

/// Catches accidental quadratic work: seeding 100,000 contacts and one filtered, sorted search
/// over them must stay well within seconds even in a debug build.
#[tokio::test]
async fn seeding_and_searching_100k_is_fast() {
    let (sim, api) = spawn(HubspotSimOptions::unlimited()).await;
    let started = std::time::Instant::now();
    for i in 0..100_000 {
        let stage = if i % 2 == 0 { "lead" } else { "customer" };
        sim.insert(props(&[
            ("email", &format!("seed{i}@x.test")),
            ("firstname", "Seed"),
            ("lifecyclestage", stage),
        ]))
        .unwrap();
    }
    let seeded = started.elapsed();
    let started = std::time::Instant::now();
    let resp = api
        .post(
            "/search",
            json!({
                "filterGroups": [{"filters": [
                    {"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"},
                    {"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"}
                ]}],
                "sorts": [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}],
                "limit": 200,
            }),
        )
        .await;
    let searched = started.elapsed();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body(resp).await["total"], 50_000);
    assert!(seeded < Duration::from_secs(20), "seeding took {seeded:?}");
    assert!(searched < Duration::from_secs(5), "search took {searched:?}");
}

#[tokio::test]
async fn latency_and_internal_touch() {
    let (sim, api) = spawn(HubspotSimOptions {
        latency: Duration::from_millis(60),
        ..HubspotSimOptions::unlimited()
    })
    .await;
    let id = sim.insert(props(&[("email", "t@x.test")])).unwrap();
    let before = sim.get(&id).unwrap()["lastmodifieddate"].clone();
    let started = std::time::Instant::now();
    assert_eq!(api.get(&format!("/{id}")).await.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(60));
    tokio::time::sleep(Duration::from_millis(3)).await;
    assert!(sim.internal_touch(&id));
    assert!(!sim.internal_touch("424242"));
    let after = sim.get(&id).unwrap();
    assert_ne!(after["lastmodifieddate"], before, "HubSpot's own updates move the date");
    assert_eq!(after["email"].as_deref(), Some("t@x.test"));
}

#[tokio::test]
async fn archived_contacts_are_listed_read_restored_and_erased() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    let a = sim.insert(props(&[("email", "a@example.test")])).expect("a");
    let b = sim.insert(props(&[("email", "b@example.test")])).expect("b");
    assert!(sim.ui_archive(&a));
    assert!(sim.ui_archive(&b));

    let listed = body(api.get("?archived=true&limit=100").await).await;
    let results = listed["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["id"], json!(a));
    assert_eq!(results[0]["archived"], true);
    assert!(results[0]["archivedAt"].is_string(), "{listed}");
    assert_eq!(body(api.get("?limit=100").await).await["results"], json!([]));

    let read = body(
        api.post(
            "/batch/read?archived=true",
            json!({"inputs": [{"id": a}, {"id": "999"}], "properties": ["email"]}),
        )
        .await,
    )
    .await;
    assert_eq!(read["results"][0]["id"], json!(a));
    assert_eq!(read["results"][0]["archived"], true);
    assert_eq!(read["errors"][0]["category"], "OBJECT_NOT_FOUND");

    // Restoring is refused while another live contact holds the address.
    let taker = sim.insert(props(&[("email", "b@example.test")])).expect("email is free again");
    let e = sim.ui_restore(&b).expect_err("email taken");
    assert!(e.contains(&taker), "{e}");
    sim.ui_restore(&a).expect("restores");
    let live = body(api.get(&format!("/{a}")).await).await;
    assert_eq!(live["archived"], false);
    assert!(live.get("archivedAt").is_none(), "{live}");
    assert!(sim.ui_restore("nope").is_err());

    // A GDPR delete leaves nothing behind, archived or not.
    assert!(sim.gdpr_delete(&b));
    let read = body(
        api.post("/batch/read?archived=true", json!({"inputs": [{"id": b}], "properties": []}))
            .await,
    )
    .await;
    assert_eq!(read["results"], json!([]));
    assert_eq!(api.get(&format!("/{b}?archived=true")).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn owners_are_listed_in_pages_and_only_they_can_own_a_contact() {
    let (sim, api) = spawn(HubspotSimOptions::default()).await;
    let owners = |q: &str| {
        let url = format!("{}/crm/v3/owners{q}", api.base);
        let client = api.client.clone();
        async move { client.get(url).bearer_auth(TOKEN).send().await.expect("owners") }
    };
    let first = body(owners("?limit=2").await).await;
    assert_eq!(first["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(first["results"][0]["id"], super::OWNERS[0].0);
    let after = first["paging"]["next"]["after"].as_str().expect("a next page").to_string();
    let second = body(owners(&format!("?limit=2&after={after}")).await).await;
    assert_eq!(second["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(second["results"][0]["id"], super::OWNERS[2].0);
    assert!(second.get("paging").is_none(), "the last page has no paging: {second}");
    assert_eq!(owners("?limit=501").await.status(), StatusCode::BAD_REQUEST);

    let id = sim.insert(props(&[("email", "o@x.test")])).unwrap();
    let owner = super::OWNERS[1].0;
    let resp =
        api.patch(&format!("/{id}"), json!({"properties": {"hubspot_owner_id": owner}})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(sim.get(&id).unwrap()["hubspot_owner_id"].as_deref(), Some(owner));
    let resp =
        api.patch(&format!("/{id}"), json!({"properties": {"hubspot_owner_id": "123"}})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let b = body(resp).await;
    assert_eq!(b["category"], "VALIDATION_ERROR");
    assert_eq!(b["errors"][0]["code"], "INVALID_OWNER_ID");
    assert_eq!(sim.get(&id).unwrap()["hubspot_owner_id"].as_deref(), Some(owner), "unchanged");
}
