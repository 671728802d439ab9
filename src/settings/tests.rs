//! Settings: the shipped configs parse, overrides apply, errors name keys.

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
}

fn example() -> String {
    // The example points at systemd credential files; use variables here instead.
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/leadsync.example.toml"))
        .expect("example config")
        .replace(
            "client_secret_file = \"/run/credentials/leadsync.service/salesforce_client_secret\"",
            "client_secret_env = \"SF\"",
        )
        .replace(
            "token_file = \"/run/credentials/leadsync.service/hubspot_token\"",
            "token_env = \"HS\"",
        )
}

#[test]
fn example_config_parses_with_every_key() {
    let s = Settings::load(Source::Inline(&example()), &env(&[("SF", "x"), ("HS", "y")]))
        .expect("example is valid");
    assert_eq!(s.systems.len(), 2);
    let crm = s.systems.iter().find(|s| s.name.as_str() == "crm").expect("crm");
    assert_eq!(crm.role, Role::Crm);
    assert_eq!(crm.create, CreatePolicy::FromStage(Stage::Mql));
    assert_eq!(s.sync.status_implies_stage.get("working"), Some(&Stage::Sql));
}

#[test]
fn demo_config_parses() {
    let s = Settings::load(
        Source::Inline(DEMO_TOML),
        &env(&[("LEADSYNC_DEMO_SALESFORCE_SECRET", "x"), ("LEADSYNC_DEMO_HUBSPOT_TOKEN", "y")]),
    )
    .expect("demo config is valid");
    assert_eq!(s.systems.len(), 2);
}

#[test]
fn environment_overrides_win() {
    let s = Settings::load(
        Source::Inline(&example()),
        &env(&[("SF", "x"), ("HS", "y"), ("LEADSYNC__LEDGER__PATH", "/tmp/other.db")]),
    )
    .expect("valid");
    assert_eq!(s.ledger_path, PathBuf::from("/tmp/other.db"));
}

#[test]
fn value_map_keys_keep_their_case() {
    // Vendor values such as ATTEMPTED_TO_CONTACT are keys in the TOML; they must survive.
    let s = Settings::load(Source::Inline(&example()), &env(&[("SF", "x"), ("HS", "y")]))
        .expect("valid");
    let mkt = s.systems.iter().find(|s| s.name.as_str() == "marketing").expect("marketing");
    let ConnectorSettings::Hubspot(cfg) = &mkt.connector else { panic!("hubspot expected") };
    let props = [("hs_lead_status".to_string(), Some("ATTEMPTED_TO_CONTACT".to_string()))].into();
    let fields = cfg.map.to_canonical(&props);
    assert_eq!(
        fields.get(&crate::domain::Field::LeadStatus).map(String::as_str),
        Some("working"),
        "the alias key kept its case through the config crate"
    );
}

fn key_of(r: Result<Settings, SettingsError>) -> String {
    match r {
        Err(SettingsError::Key(k)) => k.key,
        Err(SettingsError::Load(m)) => format!("load: {m}"),
        Ok(_) => "ok".into(),
    }
}

#[test]
fn errors_name_the_key() {
    let e = env(&[("SF", "x"), ("HS", "y")]);
    let bad = example().replace(
        "status_implies_stage = { working = \"sql\"",
        "status_implies_stage = { working = \"sqll\"",
    );
    assert_eq!(
        key_of(Settings::load(Source::Inline(&bad), &e)),
        "sync.status_implies_stage.working"
    );
    let bad = example().replace("format = \"auto\"", "format = \"xml\"");
    assert_eq!(key_of(Settings::load(Source::Inline(&bad), &e)), "log.format");
    let bad = example().replace("create_when = \"mql\"", "create_when = \"sometimes\"");
    assert_eq!(key_of(Settings::load(Source::Inline(&bad), &e)), "systems.crm.create_when");
    let bad = example().replace("role = \"marketing\"", "role = \"crm\"");
    assert_eq!(key_of(Settings::load(Source::Inline(&bad), &e)), "systems");
}
