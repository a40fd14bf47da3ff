//! The cross-tracer contract: every case of the shared conformance folder, run through this
//! crate's SDK, must put exactly the expected tags on the exported local root.
//!
//! Cases come from `$TRACING_USR_CONFORMANCE_DIR`, else `../shared/conformance` next to the
//! repository; new files there are picked up without code changes. Run with
//! `cargo test --workspace conformance`.
#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;

use serde_json::Value;
use tracing::info_span;
use tracing_usr::export::SpanRecord;
use tracing_usr::{LoginUser, Metadata, SetUserOptions, User};

use support::{builder_with_env, Harness};

fn conformance_dir() -> PathBuf {
    let dir = std::env::var_os("TRACING_USR_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance"));
    assert!(
        dir.is_dir(),
        "conformance cases not found at {}: set TRACING_USR_CONFORMANCE_DIR or check out shared/ next to the repository",
        dir.display()
    );
    dir
}

fn s<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

fn req<'a>(args: &'a Value, key: &str) -> &'a str {
    s(args, key).unwrap_or("")
}

fn metadata(args: &Value) -> Metadata {
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
    let dir = conformance_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.json case in {}", dir.display());
    let (mut ran, mut skipped, mut report) = (0, Vec::new(), Vec::new());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let case: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", file.display()));
        let name = case["case"].as_str().unwrap_or("?").to_owned();
        if case.get("invoke").is_none() {
            skipped.push(name);
            continue;
        }
        let file_mode = case["mode"].as_str().unwrap_or("identification").to_owned();
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
            let problems = run_case(&case, &mode);
            if !problems.is_empty() {
                report.push(format!(
                    "{name} ({}) in {mode} mode:\n{}",
                    file.display(),
                    problems.join("\n")
                ));
            }
        }
    }
    eprintln!(
        "conformance: {ran} runs of {} cases, skipped (field-path cases): {skipped:?}",
        files.len() - skipped.len()
    );
    assert!(
        report.is_empty(),
        "conformance failures:\n{}",
        report.join("\n\n")
    );
}
