//! House rules that are cheaper to check than to remember.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every module opens with a `//!` comment that says what it is for.
#[test]
fn every_module_has_a_doc_comment() {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(files.len() > 20);
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            !text.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| l.starts_with("//!"))
        })
        .collect();
    assert!(missing.is_empty(), "modules without a //! doc comment: {missing:?}");
}

/// Only the ledger runs SQL.
#[test]
fn only_the_ledger_uses_rusqlite() {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    let offenders: Vec<_> = files
        .iter()
        .filter(|f| !f.components().any(|c| c.as_os_str() == "ledger"))
        .filter(|f| std::fs::read_to_string(f).expect("read").contains("rusqlite"))
        .collect();
    assert!(offenders.is_empty(), "rusqlite used outside src/ledger: {offenders:?}");
}
