//! The backend layer depends on nothing above it: no file under
//! `backend/` names the services, the server, the HTTP layer, the
//! credentials, the settings or the contract. It may use the layers below
//! it (`storage`, `limits_record`, `clock`, `fatal`) and the queue crate; from tonic, only
//! its re-export of `async_trait`. This reads the sources, as the queue
//! crate's layering test reads its manifest.

use std::path::Path;

/// What a backend file may name after `crate::`.
const ALLOWED: &[&str] = &["backend", "storage", "limits_record", "clock", "fatal"];

/// Each forbidden name in `source` (code only, not comments), with its line.
fn violations(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in (1..).zip(source.lines()) {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let module: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !ALLOWED.contains(&module.as_str()) {
                found.push((n, format!("crate::{module}")));
            }
            rest = after;
        }
        if code.contains("sluice_proto") {
            found.push((n, "sluice_proto".into()));
        }
        if code.contains("tonic::") && !code.contains("tonic::async_trait") {
            found.push((n, "tonic".into()));
        }
    }
    found
}

fn rust_files(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn the_backend_names_no_service_server_or_contract() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backend");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    assert!(files.len() > 10, "{files:?}");
    for file in files.iter().filter(|f| !f.ends_with("backend/tests.rs")) {
        let source = std::fs::read_to_string(file).expect("a readable source file");
        let found = violations(&source);
        assert!(found.is_empty(), "{} names {found:?}", file.display());
    }
}

#[test]
fn the_checker_sees_a_forbidden_import() {
    let source = "use crate::service::RequestError;\n// crate::server in a comment\n\
        use crate::backend::LeaseRef;\nlet job: sluice_proto::v1::Job;\n#[tonic::async_trait]\n\
        fn f() -> tonic::Status {}\n";
    assert_eq!(
        violations(source),
        [
            (1, "crate::service".to_owned()),
            (4, "sluice_proto".to_owned()),
            (6, "tonic".to_owned())
        ]
    );
}
