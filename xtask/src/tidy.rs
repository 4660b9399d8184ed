//! Hygiene checks run by plain `cargo test`: every Rust source file in the
//! workspace opens with a `//!` module doc saying what lives there, and the
//! repository stands on its own: no file points outside it for its docs.

use std::fs;
use std::path::{Path, PathBuf};

/// Directories never searched: build output and version control.
const SKIP_DIRS: &[&str] = &["target", ".git", "node_modules"];

/// Every `.rs` file under `dir`, skipping [`SKIP_DIRS`] and hidden directories.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    files(dir, &|name| name.ends_with(".rs"), out);
}

/// Every file under `dir` whose name passes `keep`, skipping [`SKIP_DIRS`]
/// and hidden directories (`.ci` excepted: it is ours).
fn files(dir: &Path, keep: &dyn Fn(&str) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if (!name.starts_with('.') || name == ".ci") && !SKIP_DIRS.contains(&name.as_ref()) {
                files(&path, keep, out);
            }
        } else if keep(&name) {
            out.push(path);
        }
    }
}

/// Whether `text` starts with an inner doc comment (a BOM or leading blank
/// lines would hide it from rustdoc's first-line summary, so they count as missing).
fn starts_with_module_doc(text: &str) -> bool {
    text.starts_with("//!")
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let root = crate::project_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("xtask/src/tidy.rs")),
        "tidy walked the wrong tree: {}",
        root.display()
    );
    let mut missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap_or_default();
            !starts_with_module_doc(&text)
        })
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "these files must start with a `//!` module doc:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn module_doc_detection() {
    assert!(starts_with_module_doc("//! Frames.\nuse x;"));
    assert!(!starts_with_module_doc("/// Item doc.\nfn f() {}"));
    assert!(!starts_with_module_doc("\n//! Late."));
    assert!(!starts_with_module_doc("// Plain comment.\n"));
    assert!(!starts_with_module_doc(""));
}

/// Names of material outside this repository that its files must not lean
/// on: the repository's own docs (docs/protocol.md and the rest) are the
/// reference. Spelled in pieces so this file does not match itself.
fn outside_references() -> [String; 7] {
    [
        format!("{}/shared", ".."),
        format!("/work/{}", "shared"),
        format!("{}.md", "PROTOCOL"),
        format!("{}.md", "STYLE"),
        // Protocol items are named as docs/protocol.md names them ("protocol X1").
        format!("{} P", "PROTOCOL"),
        format!("{} X", "PROTOCOL"),
        format!("{} C", "PROTOCOL"),
    ]
}

#[test]
fn nothing_points_outside_the_repository() {
    let root = crate::project_root();
    let mut all = Vec::new();
    files(&root, &|_| true, &mut all);
    assert!(
        all.iter().any(|f| f.ends_with("README.md")),
        "tidy walked the wrong tree"
    );
    let needles = outside_references();
    let mut found: Vec<String> = all
        .iter()
        .filter_map(|f| {
            let text = fs::read_to_string(f).ok()?; // binary files: skipped
            let needle = needles.iter().find(|n| text.contains(n.as_str()))?;
            let file = f.strip_prefix(&root).unwrap_or(f).display();
            Some(format!("{file}: {needle}"))
        })
        .collect();
    found.sort();
    assert!(
        found.is_empty(),
        "these files refer to material outside the repository:\n  {}",
        found.join("\n  ")
    );
}
