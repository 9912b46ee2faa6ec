//! Verifies that data crosses the engine one way: each engine module refers only to modules below it in the chain engine → io → api → state → handle → fanout → mesh → conn → uring → (pubsub, stats, config, streams, proto, sys, uring_probe, alloc), never to one above.
//!
//! A module that needs something from above gets it injected (a value, a
//! callback's return) instead; see docs/design.md.

use std::fs;
use std::path::Path;

/// Top to bottom. A module may refer to any module after it.
const CHAIN: &[&str] = &[
    "engine",
    "io",
    "api",
    "state",
    "handle",
    "fanout",
    "mesh",
    "conn",
    "uring",
    "pubsub",
    "stats",
    "config",
    "streams",
    "proto",
    "sys",
    "uring_probe",
    "alloc",
];

fn sources(path: &Path, out: &mut Vec<(String, String)>) {
    if path.is_dir() {
        for e in fs::read_dir(path).unwrap() {
            sources(&e.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push((
            path.display().to_string(),
            fs::read_to_string(path).unwrap(),
        ));
    }
}

/// `crate::name` references outside comments, with their line numbers.
fn references(text: &str) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let tail = &rest[at + "crate::".len()..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            refs.push((i + 1, name));
            rest = tail;
        }
    }
    refs
}

#[test]
fn no_engine_module_refers_to_a_module_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut checked = 0;
    for (rank, module) in CHAIN.iter().enumerate() {
        let dir = src.join(module);
        let file = src.join(format!("{module}.rs"));
        let mut files = Vec::new();
        sources(if dir.is_dir() { &dir } else { &file }, &mut files);
        assert!(!files.is_empty(), "module {module} not found");
        for (path, text) in files {
            checked += 1;
            for (line, name) in references(&text) {
                let target = CHAIN.iter().position(|m| *m == name);
                match target {
                    Some(t) if t >= rank => {}
                    Some(_) => violations.push(format!(
                        "{path}:{line}: {module} refers up to crate::{name}"
                    )),
                    // Root re-exports hide which module is meant.
                    None => violations.push(format!(
                        "{path}:{line}: crate::{name} is not a module of the chain"
                    )),
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} files read");
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_standalone_server_uses_the_engine_only_through_its_public_paths() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = Vec::new();
    for (path, text) in &files {
        for (line, name) in references(text) {
            violations.push(format!(
                "{path}:{line}: crate::{name} (use shardcast::… as an application would)"
            ));
        }
    }
    assert!(files.len() >= 8, "only {} server files read", files.len());
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
