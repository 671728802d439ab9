//! Deals, associations and conversions over real HTTP: paging, limits, auth, errors.

use std::collections::BTreeMap;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use super::{Fault, HubspotSim, HubspotSimOptions};

const TOKEN: &str = "pat-na1-deals";

async fn start(opts: HubspotSimOptions) -> (HubspotSim, Client, String) {
    let sim = HubspotSim::new(HubspotSimOptions { token: TOKEN.into(), ..opts });
    sim.start("127.0.0.1:0").await.unwrap();
    let base = sim.base_url();
    (sim, Client::new(), base)
}

fn props(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn post(http: &Client, url: String, body: Value) -> (StatusCode, Value) {
    let r = http.post(url).bearer_auth(TOKEN).json(&body).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn list_batch_read_and_search_deals() {
    let (sim, http, base) = start(HubspotSimOptions::unlimited()).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            sim.create_deal(props(&[("dealname", &format!("D{n}")), ("amount", "100")])).unwrap(),
        );
    }
    assert!(sim.create_deal(props(&[("dealstage", "nope")])).is_err());
    assert!(sim.create_deal(props(&[("hs_is_closed", "true")])).is_err());
    std::thread::sleep(std::time::Duration::from_millis(3));
    sim.update_deal(&ids[1], props(&[("dealstage", "closedlost")])).unwrap();

    let r = http
        .get(format!("{base}/crm/v3/objects/deals?limit=2&properties=dealname,hs_is_closed"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["results"].as_array().unwrap().len(), 2);
    assert_eq!(body["results"][1]["properties"]["hs_is_closed"], "true");
    let after = body["paging"]["next"]["after"].as_str().unwrap().to_owned();
    let body: Value = http
        .get(format!("{base}/crm/v3/objects/deals?limit=100&after={after}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["results"].as_array().unwrap().len(), 3);
    assert!(body.get("paging").is_none(), "no paging on the last page");
    let r = http
        .get(format!("{base}/crm/v3/objects/deals?limit=101"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let (status, body) = post(
        &http,
        format!("{base}/crm/v3/objects/deals/batch/read"),
        json!({"inputs": [{"id": ids[0]}, {"id": "1"}], "properties": ["dealname"]}),
    )
    .await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    assert_eq!(body["results"][0]["properties"]["dealname"], "D0");
    assert_eq!(body["errors"][0]["context"]["ids"], json!(["1"]));

    let (status, body) = post(
        &http,
        format!("{base}/crm/v3/objects/deals/search"),
        json!({"filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "0"}]}],
               "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}], "limit": 2, "properties": ["dealname"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total"], 5);
    assert_eq!(body["paging"]["next"]["after"], "2");
    assert_eq!(body["results"][0]["id"], ids[0].as_str());
    let (_, body) = post(
        &http,
        format!("{base}/crm/v3/objects/deals/search"),
        json!({"sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}], "limit": 5, "after": "3"}),
    )
    .await;
    assert_eq!(body["results"][1]["id"], ids[1].as_str(), "the deal modified last sorts last");
    let (status, _) =
        post(&http, format!("{base}/crm/v3/objects/deals/search"), json!({"limit": 201})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(
        &http,
        format!("{base}/crm/v3/objects/deals/search"),
        json!({"limit": 100, "after": "9950"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "past 10,000 results");
}

#[tokio::test]
async fn associations_batch_read_pages_per_deal() {
    let (sim, http, base) = start(HubspotSimOptions::unlimited()).await;
    let deal = sim.create_deal(props(&[("dealname", "Many")])).unwrap();
    let lonely = sim.create_deal(props(&[("dealname", "None")])).unwrap();
    let mut people = Vec::new();
    for n in 0..501 {
        let p = sim.insert(props(&[("email", &format!("p{n}@example.test"))])).unwrap();
        sim.associate_deal(&deal, &p, true).unwrap();
        people.push(p);
    }
    assert!(sim.associate_deal(&deal, "999999", true).is_err());
    let url = format!("{base}/crm/v4/associations/deals/contacts/batch/read");
    let (status, body) =
        post(&http, url.clone(), json!({"inputs": [{"id": deal}, {"id": lonely}, {"id": "5"}]}))
            .await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "a deal without contacts is left out");
    assert_eq!(results[0]["to"].as_array().unwrap().len(), 500);
    assert_eq!(results[0]["to"][0]["associationTypes"][0]["typeId"], 3);
    assert!(results[0]["to"][0]["toObjectId"].is_number());
    let after = results[0]["paging"]["next"]["after"].as_str().unwrap().to_owned();
    let (_, body) = post(&http, url, json!({"inputs": [{"id": deal, "after": after}]})).await;
    assert_eq!(body["results"][0]["to"].as_array().unwrap().len(), 1);
    assert_eq!(body["results"][0]["to"][0]["toObjectId"].to_string(), *people.last().unwrap());
}

#[tokio::test]
async fn auth_rate_limits_and_faults_apply_to_deals() {
    let (sim, http, base) =
        start(HubspotSimOptions { rate_limit_per_10s: Some(2), ..HubspotSimOptions::default() })
            .await;
    let r = http.get(format!("{base}/crm/v3/objects/deals")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    sim.inject(Fault::ServerError { status: 503, count: 1 });
    let r =
        http.get(format!("{base}/crm/v3/objects/deals")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r =
        http.get(format!("{base}/crm/v3/objects/deals")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r =
        http.get(format!("{base}/crm/v3/objects/deals")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
}

#[tokio::test]
async fn conversion_properties_are_read_only_through_the_api() {
    let (sim, http, base) = start(HubspotSimOptions::unlimited()).await;
    let id = sim.insert(props(&[("email", "a@example.test")])).unwrap();
    let r = http
        .patch(format!("{base}/crm/v3/objects/contacts/{id}"))
        .bearer_auth(TOKEN)
        .json(&json!({"properties": {"recent_conversion_event_name": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let before = sim.get(&id).unwrap()["lastmodifieddate"].clone();
    std::thread::sleep(std::time::Duration::from_millis(2));
    sim.submit_form(&id, "Webinar", None, None).unwrap();
    let c = sim.get(&id).unwrap();
    assert_eq!(c["first_conversion_event_name"].as_deref(), Some("Webinar"));
    assert_eq!(c["hs_analytics_source"].as_deref(), Some("OFFLINE"));
    assert_ne!(c["lastmodifieddate"], before);
    assert!(sim.submit_form("424242", "Webinar", None, None).is_err());
}
