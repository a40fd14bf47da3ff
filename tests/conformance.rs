//! The tag contract (`docs/tags.md`, "Worked examples"): every case of
//! `tests/conformance/cases/`, run through this crate's SDK, must put exactly the expected tags
//! on the exported local root, in every mode.
//!
//! `TRACING_USR_CONFORMANCE_DIR` names more directories of cases (separated like `PATH`): their
//! cases are read after the built-in ones, and a case with the same `case` name replaces the
//! built-in one. New files are picked up without code changes. Run with
//! `cargo test --workspace --test conformance`.
#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tracing::info_span;
use tracing_usr::export::SpanRecord;
use tracing_usr::{EventMetadata, LoginUser, SetUserOptions, User};

use support::{builder_with_env, Harness};

/// The directories whose cases run: the repository's own, then those of the variable.
fn case_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases")];
    if let Some(extra) = std::env::var_os("TRACING_USR_CONFORMANCE_DIR").filter(|v| !v.is_empty()) {
        dirs.extend(std::env::split_paths(&extra));
    }
    dirs
}

/// One case file, read and checked: it must call something and expect something.
struct Case {
    file: PathBuf,
    name: String,
    json: Value,
}

fn read_case(file: &Path) -> Result<Case, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: invalid JSON: {e}", file.display()))?;
    let name = json["case"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{}: no \"case\" name", file.display()))?
        .to_owned();
    if json["invoke"]["fn"].as_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{}: case {name:?} has nothing to invoke (no invoke.fn)",
            file.display()
        ));
    }
    let expects =
        json["root_tags"].as_object().map_or(0, |m| m.len()) + json["absent"].as_array().map_or(0, Vec::len);
    if expects == 0 {
        return Err(format!(
            "{}: case {name:?} expects nothing (no root_tags and no absent tags)",
            file.display()
        ));
    }
    Ok(Case {
        file: file.to_owned(),
        name,
        json,
    })
}

/// Every case of `dirs`, by name (a later directory's case replaces an earlier one of that name).
fn load_cases(dirs: &[PathBuf]) -> Result<BTreeMap<String, Case>, Vec<String>> {
    let (mut cases, mut errors) = (BTreeMap::new(), Vec::new());
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                errors.push(format!("conformance directory {}: {e}", dir.display()));
                continue;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        if files.is_empty() {
            errors.push(format!(
                "conformance directory {} holds no *.json case",
                dir.display()
            ));
        }
        for file in files {
            match read_case(&file) {
                Ok(case) => {
                    cases.insert(case.name.clone(), case);
                }
                Err(e) => errors.push(e),
            }
        }
    }
    if errors.is_empty() {
        Ok(cases)
    } else {
        Err(errors)
    }
}

fn s<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

fn req<'a>(args: &'a Value, key: &str) -> &'a str {
    s(args, key).unwrap_or("")
}

fn metadata(args: &Value) -> EventMetadata {
    args.get("metadata").cloned().into()
}

/// Calls the SDK function a case names, with its arguments by name.
fn invoke(function: &str, args: &Value) -> Result<(), String> {
    let result = match function {
        "set_user" => {
            let mut user = User::new(req(args, "id"));
            for (key, value) in args.as_object().into_iter().flatten() {
                let Some(text) = value.as_str() else { continue };
                user = match key.as_str() {
                    "id" | "propagate" => user,
                    "login" => user.with_login(text),
                    "email" => user.with_email(text),
                    "name" => user.with_name(text),
                    "session_id" => user.with_session_id(text),
                    "role" => user.with_role(text),
                    "scope" => user.with_scope(text),
                    other => user.with_extra(other, text),
                };
            }
            let propagate = args.get("propagate").and_then(Value::as_bool).unwrap_or(false);
            tracing_usr::set_user(&user, SetUserOptions { propagate })
        }
        "track_user" => tracing_usr::track_user(
            req(args, "login"),
            req(args, "user_id"),
            s(args, "session_id"),
            metadata(args),
        ),
        "track_user_id" => {
            tracing_usr::track_user_id(req(args, "user_id"), s(args, "session_id"), metadata(args))
        }
        "track_login_success" => tracing_usr::track_login_success(
            req(args, "login"),
            LoginUser::from(s(args, "user_id")),
            metadata(args),
            SetUserOptions {
                propagate: args.get("propagate").and_then(Value::as_bool).unwrap_or(false),
            },
        ),
        "track_login_failure" => tracing_usr::track_login_failure(
            req(args, "login"),
            args.get("exists").and_then(Value::as_bool).unwrap_or(false),
            s(args, "user_id"),
            metadata(args),
        ),
        "track_signup" => tracing_usr::track_signup(req(args, "login"), s(args, "user_id"), metadata(args)),
        "track_custom_event" => tracing_usr::track_custom_event(req(args, "name"), metadata(args)),
        "track_user_delete" => tracing_usr::track_user_delete(req(args, "user_id"), metadata(args)),
        "track_password_reset" => tracing_usr::track_password_reset(
            s(args, "user_id"),
            s(args, "login"),
            args.get("exists").and_then(Value::as_bool).unwrap_or(false),
            metadata(args),
        ),
        "track_payment_failure" => tracing_usr::track_payment_failure(metadata(args)),
        "track_sensitive_activity" => {
            tracing_usr::track_sensitive_activity(req(args, "name"), s(args, "required_role"), metadata(args))
        }
        other => return Err(format!("unknown SDK function {other:?}")),
    };
    result.map_err(|e| format!("{function} returned an error: {e}"))
}

fn tag(span: &SpanRecord, key: &str) -> Option<String> {
    span.meta(key)
        .map(str::to_owned)
        .or_else(|| span.metric(key).map(|m| m.to_string()))
}

/// Tag prefixes of the contract: on the root, every tag with one of them must be listed by the case.
const CONTRACT_PREFIXES: &[&str] = &["usr.", "appsec.", "_dd.appsec.", "_dd.p.usr."];

/// Runs one case in `mode` and returns its mismatches.
fn run_case(case: &Value, mode: &str) -> Vec<String> {
    let function = case["invoke"]["fn"].as_str().unwrap_or_default();
    let args = &case["invoke"]["args"];
    let vars: Vec<(&str, &str)> = if mode == "identification" {
        vec![]
    } else {
        vec![("DD_APPSEC_AUTO_USER_INSTRUMENTATION_MODE", mode)]
    };
    let h = Harness::new(builder_with_env(&vars));
    let mut problems = Vec::new();
    h.run(|| {
        let _root = info_span!("request", http.route = "/conformance").entered();
        let _child = info_span!("handler").entered();
        if let Err(e) = invoke(function, args) {
            problems.push(e);
        }
    });
    let spans = h.spans();
    let Some(root) = spans.iter().find(|s| s.local_root) else {
        problems.push("no local root exported".to_owned());
        return problems;
    };
    for (key, expected) in case["root_tags"].as_object().into_iter().flatten() {
        let expected = expected
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| expected.to_string());
        let found = if key == "_sampling_priority_v1" {
            // A metric: compared numerically ("2" matches 2.0).
            root.metric(key).map(|m| {
                if expected.parse::<f64>().ok() == Some(m) {
                    expected.clone()
                } else {
                    m.to_string()
                }
            })
        } else {
            root.meta(key).map(str::to_owned)
        };
        match found {
            Some(found) if found == expected => {}
            Some(found) => problems.push(format!("  {key}: expected {expected:?}, found {found:?}")),
            None => problems.push(format!("  {key}: expected {expected:?}, missing")),
        }
    }
    // The contract's own tags are exactly those listed: a produced tag the case does not
    // expect is a failure too (so an expectation removed from a case file shows).
    let expected = case["root_tags"].as_object();
    for (key, value) in root.tags().iter() {
        let contract = CONTRACT_PREFIXES.iter().any(|p| key.starts_with(p));
        if contract && !expected.is_some_and(|m| m.contains_key(&**key)) {
            problems.push(format!("  {key}: not expected by the case, found {value:?}"));
        }
    }
    for key in case["absent"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if let Some(found) = tag(root, key) {
            problems.push(format!("  {key}: must be absent, found {found:?}"));
        }
    }
    for child in spans.iter().filter(|s| !s.local_root) {
        for key in case["root_tags"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if let Some(found) = tag(child, key) {
                problems.push(format!("  child {:?} carries {key}={found:?}", child.name));
            }
        }
    }
    problems
}

#[test]
fn conformance_cases_produce_the_datadog_root_tags() {
    let cases =
        load_cases(&case_dirs()).unwrap_or_else(|errors| panic!("conformance cases:\n{}", errors.join("\n")));
    assert!(
        !cases.is_empty(),
        "no conformance case found in {:?}",
        case_dirs()
    );
    let (mut ran, mut report) = (0, Vec::new());
    for case in cases.values() {
        let file_mode = case.json["mode"].as_str().unwrap_or("identification").to_owned();
        // SDK output must not depend on the mode: the case's own mode first, then the others.
        let mut modes = vec![file_mode.clone()];
        modes.extend(
            ["identification", "anonymization", "disabled"]
                .iter()
                .map(|m| m.to_string())
                .filter(|m| *m != file_mode),
        );
        for mode in modes {
            ran += 1;
            let problems = run_case(&case.json, &mode);
            if !problems.is_empty() {
                report.push(format!(
                    "{} ({}) in {mode} mode:\n{}",
                    case.name,
                    case.file.display(),
                    problems.join("\n")
                ));
            }
        }
    }
    eprintln!("conformance: {ran} runs of {} cases", cases.len());
    assert!(
        report.is_empty(),
        "conformance failures:\n{}",
        report.join("\n\n")
    );
}

/// A scratch directory with the given case files, removed on drop.
struct CaseDir(PathBuf);

impl CaseDir {
    fn new(label: &str, files: &[(&str, &str)]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tracing-usr-conformance-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Self(dir)
    }
}

impl Drop for CaseDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_directory_without_cases_is_an_error_not_a_pass() {
    let empty = CaseDir::new("empty", &[("README.md", "no cases here")]);
    let errors = load_cases(std::slice::from_ref(&empty.0))
        .err()
        .expect("an error");
    assert!(errors[0].contains("holds no *.json case"), "{errors:?}");
}

#[test]
fn a_case_with_nothing_to_invoke_or_expect_is_an_error() {
    let dir = CaseDir::new(
        "hollow",
        &[
            (
                "no_invoke.json",
                r#"{"case": "no_invoke", "root_tags": {"usr.id": "u"}}"#,
            ),
            (
                "no_expect.json",
                r#"{"case": "no_expect", "invoke": {"fn": "track_user_id", "args": {"user_id": "u"}}, "root_tags": {}, "absent": []}"#,
            ),
        ],
    );
    let errors = load_cases(std::slice::from_ref(&dir.0)).err().expect("errors");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("\"no_expect\" expects nothing")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("\"no_invoke\" has nothing to invoke")),
        "{errors:?}"
    );
}

#[test]
fn a_wrong_expectation_fails_and_names_the_tag() {
    let case: Value = serde_json::from_str(
        r#"{"case": "wrong", "invoke": {"fn": "track_user_id", "args": {"user_id": "user-1"}},
            "root_tags": {"usr.id": "someone-else"}, "absent": ["_dd.appsec.user.collection_mode"]}"#,
    )
    .unwrap();
    let problems = run_case(&case, "identification");
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].contains("usr.id: expected \"someone-else\", found \"user-1\""),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("_dd.appsec.user.collection_mode: not expected by the case"),
        "{problems:?}"
    );
    assert!(
        problems[2].contains("_dd.appsec.user.collection_mode: must be absent"),
        "{problems:?}"
    );
}

#[test]
fn a_case_missing_one_expected_tag_fails() {
    let builtin = load_cases(&case_dirs()[..1]).unwrap();
    let mut case = builtin["track_login_success"].json.clone();
    case["root_tags"].as_object_mut().unwrap().remove("usr.id");
    let problems = run_case(&case, "identification");
    assert_eq!(problems, ["  usr.id: not expected by the case, found \"user-1\""]);
}

#[test]
fn an_extra_directory_adds_cases_and_replaces_same_named_ones() {
    let extra = CaseDir::new(
        "extra",
        &[
            (
                "mine.json",
                r#"{"case": "track_user", "invoke": {"fn": "track_user_id", "args": {"user_id": "x"}}, "root_tags": {"usr.id": "x"}}"#,
            ),
            (
                "new.json",
                r#"{"case": "brand_new", "invoke": {"fn": "track_user_id", "args": {"user_id": "y"}}, "root_tags": {"usr.id": "y"}}"#,
            ),
        ],
    );
    let builtin = case_dirs().remove(0);
    let alone = load_cases(std::slice::from_ref(&builtin)).unwrap();
    let both = load_cases(&[builtin, extra.0.clone()]).unwrap();
    assert_eq!(both.len(), alone.len() + 1);
    assert!(both["track_user"].file.starts_with(&extra.0));
    assert!(both.contains_key("brand_new"));
}
