//! Hygiene checks run by plain `cargo test` (STYLE §8): every Rust source
//! file in the workspace opens with a `//!` module doc saying what lives there.

use std::fs;
use std::path::{Path, PathBuf};

/// Directories never searched: build output and version control.
const SKIP_DIRS: &[&str] = &["target", ".git", "node_modules"];

/// Every `.rs` file under `dir`, skipping [`SKIP_DIRS`] and hidden directories.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !name.starts_with('.') && !SKIP_DIRS.contains(&name.as_ref()) {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
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
        "these files must start with a `//!` module doc (STYLE §6):\n  {}",
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
