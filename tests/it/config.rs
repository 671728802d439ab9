//! The binary's answers to broken configuration: exit 78 and a message naming the key.

use std::process::Command;

fn check(toml: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("leadsync.toml");
    std::fs::write(&path, toml).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_leadsync"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run leadsync");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

const GOOD: &str = r#"
[ledger]
path = "/tmp/never-opened.db"

[systems.crm]
kind = "salesforce"
role = "crm"
login_url = "https://acme.my.salesforce.com"
client_id = "abc"
client_secret_env = "SF_SECRET"

[systems.marketing]
kind = "hubspot"
role = "marketing"
token_env = "HS_TOKEN"
"#;

const SECRETS: &[(&str, &str)] = &[("SF_SECRET", "s3cret"), ("HS_TOKEN", "pat-na1-x")];

#[test]
fn missing_key_is_named() {
    let (code, err) = check(&GOOD.replace("client_id = \"abc\"\n", ""), SECRETS);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("systems.crm") && err.contains("client_id"), "{err}");
}

#[test]
fn misspelled_key_is_named() {
    let (code, err) = check(&GOOD.replace("client_id =", "clinet_id ="), SECRETS);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("systems.crm") && err.contains("clinet_id"), "{err}");
}

#[test]
fn misspelled_top_level_key_is_named() {
    let (code, err) = check(&GOOD.replace("[ledger]", "[ledgr]"), SECRETS);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("ledgr") || err.contains("ledger"), "{err}");
}

#[test]
fn bad_url_is_named() {
    let (code, err) =
        check(&GOOD.replace("https://acme.my.salesforce.com", "http://acme.example.com"), SECRETS);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("systems.crm.login_url"), "{err}");
    let (code, err) = check(&GOOD.replace("https://acme.my.salesforce.com", "not a url"), SECRETS);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("systems.crm.login_url"), "{err}");
}

#[test]
fn missing_secret_is_named_and_never_printed() {
    let (code, err) = check(GOOD, &[("SF_SECRET", "s3cret")]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("systems.marketing.token_env") && err.contains("HS_TOKEN"), "{err}");
    assert!(!err.contains("s3cret"), "secret leaked: {err}");
}

#[test]
fn unknown_kind_and_role_are_named() {
    let (code, err) = check(&GOOD.replace("kind = \"hubspot\"", "kind = \"hubspt\""), SECRETS);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("systems.marketing.kind"), "{err}");
}

#[test]
fn unreachable_system_exits_69_with_a_line_per_system() {
    // Nothing listens on port 9 of loopback.
    let toml = GOOD
        .replace("https://acme.my.salesforce.com", "http://127.0.0.1:9")
        .replace("role = \"marketing\"", "role = \"marketing\"\nbase_url = \"http://127.0.0.1:9\"");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("leadsync.toml");
    std::fs::write(&path, toml).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_leadsync"))
        .args(["check", "--config"])
        .arg(&path)
        .env_clear()
        .envs(SECRETS.iter().copied())
        .env("LEADSYNC__SYSTEMS__CRM__MAX_ATTEMPTS", "1")
        .env("LEADSYNC__SYSTEMS__MARKETING__MAX_ATTEMPTS", "1")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(69), "{stdout}");
    assert!(stdout.contains("crm (salesforce): unreachable"), "{stdout}");
    assert!(stdout.contains("marketing (hubspot): unreachable"), "{stdout}");
}
