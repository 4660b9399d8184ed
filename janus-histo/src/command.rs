//! What the `janus-histo` subcommands do, as functions over a typed config
//! and an output writer, so tests run them without spawning the binary.
//!
//! The binary only parses flags into [`ShowConfig`] or [`MergeConfig`],
//! calls [`show`] or [`merge`] with stdout, and reports the files written.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::text::{render_text, TextOptions};
use crate::{svg_string, HistoError, Report};

/// What `janus-histo show` was asked to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShowConfig {
    /// The saved reports to show, in order.
    pub files: Vec<PathBuf>,
    /// Force this bucket width for the bucket table.
    pub bucket: Option<Duration>,
    /// Write an SVG plot here; with several files, one per file, numbered
    /// (`plot-1.svg`, `plot-2.svg`, …).
    pub plot: Option<PathBuf>,
}

/// What `janus-histo merge` was asked to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeConfig {
    /// The saved reports whose histograms to merge.
    pub files: Vec<PathBuf>,
    /// Write the merged report as JSON here.
    pub output: Option<PathBuf>,
    /// Write an SVG plot of the merged report here.
    pub plot: Option<PathBuf>,
    /// Force this bucket width for the bucket table.
    pub bucket: Option<Duration>,
    /// Title of the merged report (default: `merged N reports`).
    pub title: Option<String>,
}

/// Renders each file's report as text to `out`, and writes plots when asked.
/// Returns the paths of the files written.
///
/// # Errors
///
/// [`HistoError::NoInputs`]; [`HistoError::Output`], before anything is
/// read, when a plot could not be written; a [`HistoError::File`] naming the file that
/// could not be read, parsed or written; [`HistoError::Io`] when writing to
/// `out` fails.
pub fn show(config: &ShowConfig, out: &mut impl Write) -> Result<Vec<PathBuf>, HistoError> {
    if config.files.is_empty() {
        return Err(HistoError::NoInputs);
    }
    if let Some(plot) = &config.plot {
        for i in 0..config.files.len() {
            check_output("--plot", &numbered(plot, i, config.files.len()))?;
        }
    }
    let options = TextOptions {
        bucket: config.bucket,
        bars: true,
    };
    let mut written = Vec::new();
    for (i, path) in config.files.iter().enumerate() {
        let report = load_report(path)?;
        if i > 0 {
            writeln!(out)?;
        }
        if config.files.len() > 1 {
            writeln!(out, "== {} ==", path.display())?;
        }
        render_text(&report, &options, out)?;
        if let Some(plot) = &config.plot {
            let plot = numbered(plot, i, config.files.len());
            write_svg(&report, &plot)?;
            written.push(plot);
        }
    }
    Ok(written)
}

/// Merges the histograms of the files' reports losslessly (see
/// [`Report::merged`]), renders the result as text to `out`, and writes the
/// merged report and its plot when asked. Returns the merged report and the
/// paths of the files written.
///
/// # Errors
///
/// As for [`show`].
pub fn merge(
    config: &MergeConfig,
    out: &mut impl Write,
) -> Result<(Report, Vec<PathBuf>), HistoError> {
    if config.files.is_empty() {
        return Err(HistoError::NoInputs);
    }
    if let Some(path) = &config.output {
        check_output("--output", path)?;
    }
    if let Some(path) = &config.plot {
        check_output("--plot", path)?;
    }
    let reports = config
        .files
        .iter()
        .map(|p| load_report(p))
        .collect::<Result<Vec<_>, _>>()?;
    let title = config
        .title
        .clone()
        .unwrap_or_else(|| format!("merged {} reports", reports.len()));
    let mut merged = Report::merged(&reports, title);
    let sources: Vec<serde_json::Value> = config
        .files
        .iter()
        .map(|p| p.display().to_string().into())
        .collect();
    merged
        .metadata
        .insert("merged_from".to_owned(), sources.into());

    let options = TextOptions {
        bucket: config.bucket,
        bars: true,
    };
    render_text(&merged, &options, out)?;
    let mut written = Vec::new();
    if let Some(path) = &config.output {
        save_report(&merged, path)?;
        written.push(path.clone());
    }
    if let Some(path) = &config.plot {
        write_svg(&merged, path)?;
        written.push(path.clone());
    }
    Ok((merged, written))
}

/// Reads a report (or any JSON object with a `histogram` field) from `path`.
/// A report without a title is titled with the file name.
///
/// # Errors
///
/// A [`HistoError::File`] naming `path` and what was wrong with it.
pub fn load_report(path: &Path) -> Result<Report, HistoError> {
    let text = fs::read_to_string(path).map_err(|e| HistoError::Read(e).in_file(path))?;
    let mut report = Report::from_json(&text).map_err(|e| e.in_file(path))?;
    if report.title.is_empty() {
        report.title = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
    }
    Ok(report)
}

/// Writes `report` as pretty JSON to `path`.
///
/// # Errors
///
/// A [`HistoError::File`] naming `path` when it cannot be written.
pub fn save_report(report: &Report, path: &Path) -> Result<(), HistoError> {
    let mut json = report.to_json();
    json.push('\n');
    write_file(path, json.as_bytes())
}

/// Writes the SVG plot of `report` to `path`.
///
/// # Errors
///
/// A [`HistoError::File`] naming `path` when it cannot be written.
pub fn write_svg(report: &Report, path: &Path) -> Result<(), HistoError> {
    write_file(path, svg_string(report).as_bytes())
}

/// Checks, before any work, that the output file `path` named by `flag` can
/// be written the way [`write_file`] writes it: not a directory, in a
/// directory that exists and takes a new file. Leaves nothing behind.
///
/// # Errors
///
/// [`HistoError::Output`] saying what is wrong.
pub fn check_output(flag: &'static str, path: &Path) -> Result<(), HistoError> {
    let fail = |reason: String| HistoError::Output {
        flag,
        path: path.to_path_buf(),
        reason,
    };
    if path.as_os_str().is_empty() {
        return Err(fail("is an empty path".into()));
    }
    if path.is_dir() {
        return Err(fail("is a directory".into()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(fail(format!(
            "the directory {} does not exist",
            dir.display()
        )));
    }
    let tmp = tmp_path(path);
    let existed = tmp.symlink_metadata().is_ok();
    match fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&tmp)
    {
        Ok(_) => {
            if !existed {
                let _ = fs::remove_file(&tmp);
            }
            Ok(())
        }
        Err(e) => Err(fail(format!(
            "cannot create a file in {}: {e}",
            dir.display()
        ))),
    }
}

/// The temporary file [`write_file`] writes before renaming it to `path`.
fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Writes through a temporary file and a rename, so a reader never sees half
/// a file.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), HistoError> {
    let tmp = tmp_path(path);
    fs::write(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = fs::remove_file(&tmp);
            HistoError::Write(e).in_file(path)
        })
}

/// `plot.svg` for one file; `plot-1.svg`, `plot-2.svg`, … for several.
fn numbered(path: &Path, index: usize, total: usize) -> PathBuf {
    if total <= 1 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map_or_else(|| "plot".into(), |s| s.to_string_lossy().into_owned());
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{}.{}", index + 1, ext.to_string_lossy()),
        None => format!("{stem}-{}", index + 1),
    };
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Recorder, SpanPoint};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "janus-histo-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn file(&self, name: &str, content: &str) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, content).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn recorder(values: impl IntoIterator<Item = u64>) -> Recorder {
        let mut r = Recorder::new();
        for v in values {
            r.record_micros(v);
        }
        r
    }

    #[test]
    fn show_renders_reports_and_bot_output_and_plots() {
        let dir = TempDir::new();
        let mut report = Report::new("agent a", recorder(100..2_100));
        report.spans = Some((0..10).map(|i| SpanPoint::new(i, 1.0)).collect());
        let a = dir.file("a.json", &report.to_json());
        let bot = dir.file(
            "bot.json",
            &format!(
                r#"{{"histogram": "{}", "latency_ms": {{"max": 3.0}}, "clients": 3}}"#,
                recorder([1_000, 2_000, 3_000]).to_serialized()
            ),
        );
        let config = ShowConfig {
            files: vec![a, bot],
            bucket: Some(Duration::from_micros(250)),
            plot: Some(dir.0.join("plot.svg")),
        };
        let mut out = Vec::new();
        let written = show(&config, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("== "), "{text}");
        assert!(text.contains("agent a"), "{text}");
        assert!(
            text.contains("bot.json\n"),
            "untitled report titled by file name: {text}"
        );
        assert!(text.contains("clients: 3"), "{text}");
        assert!(text.contains("latency in 250 µs buckets"), "{text}");
        assert_eq!(
            written,
            [dir.0.join("plot-1.svg"), dir.0.join("plot-2.svg")]
        );
        for path in written {
            let svg = fs::read_to_string(path).unwrap();
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        }
        assert!(fs::read_to_string(dir.0.join("plot-1.svg"))
            .unwrap()
            .contains("spread"));
    }

    #[test]
    fn merge_is_lossless_and_writes_a_report() {
        let dir = TempDir::new();
        let a = recorder((0..5_000).map(|i| 200 + i * 3));
        let b = recorder((0..7_000).map(|i| 90_000 + i * 11));
        let pa = dir.file("a.json", &Report::new("a", a.clone()).to_json());
        let pb = dir.file(
            "b.json",
            &format!(r#"{{"histogram": "{}", "span_ms": 3}}"#, b.to_serialized()),
        );
        let config = MergeConfig {
            files: vec![pa, pb],
            output: Some(dir.0.join("merged.json")),
            plot: Some(dir.0.join("merged.svg")),
            bucket: None,
            title: None,
        };
        let mut out = Vec::new();
        let (merged, written) = merge(&config, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("merged 2 reports\n"), "{text}");
        assert!(text.contains("12,000"), "{text}");

        let mut expected = a;
        expected.merge(&b);
        assert_eq!(merged.histogram, expected);
        assert_eq!(written.len(), 2);
        let saved = load_report(&dir.0.join("merged.json")).unwrap();
        assert_eq!(saved, merged);
        assert_eq!(saved.metadata["merged_from"].as_array().unwrap().len(), 2);
        assert!(fs::read_to_string(dir.0.join("merged.svg"))
            .unwrap()
            .contains("merged 2 reports"));
        assert!(!dir.0.join("merged.json.tmp").exists());
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = TempDir::new();
        let cases = [
            (dir.0.join("missing.json"), "cannot read file"),
            (dir.file("bad.json", "{\"histogram\": "), "invalid JSON"),
            (
                dir.file("none.json", "{\"latency_ms\": 1}"),
                "no \"histogram\" field",
            ),
            (
                dir.file("junk.json", "{\"histogram\": \"junk\"}"),
                "invalid serialized histogram",
            ),
        ];
        for (path, message) in cases {
            let config = ShowConfig {
                files: vec![path.clone()],
                ..ShowConfig::default()
            };
            let err = show(&config, &mut Vec::new()).unwrap_err();
            assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
            let source = std::error::Error::source(&err).unwrap().to_string();
            assert!(source.contains(message), "{source}");
        }
        assert!(matches!(
            show(&ShowConfig::default(), &mut Vec::new()),
            Err(HistoError::NoInputs)
        ));
        assert!(matches!(
            merge(&MergeConfig::default(), &mut Vec::new()),
            Err(HistoError::NoInputs)
        ));

        let good = dir.file("good.json", &Report::new("g", recorder([5])).to_json());
        let config = MergeConfig {
            files: vec![good],
            output: Some(dir.0.join("no/such/dir/out.json")),
            ..MergeConfig::default()
        };
        let err = merge(&config, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("out.json"), "{err}");
        assert!(err.to_string().starts_with("--output "), "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(err.is_usage(), "{err:?}");

        // Checked before the inputs are read: a bad plot path is the error
        // even when the input is missing.
        let config = ShowConfig {
            files: vec![dir.0.join("missing.json")],
            plot: Some(dir.0.clone()),
            ..ShowConfig::default()
        };
        let err = show(&config, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("--plot"), "{err}");
        assert!(err.to_string().contains("is a directory"), "{err}");
        assert!(err.is_usage(), "{err:?}");
    }

    #[test]
    fn plot_names() {
        let p = Path::new("/x/plot.svg");
        assert_eq!(numbered(p, 0, 1), Path::new("/x/plot.svg"));
        assert_eq!(numbered(p, 1, 3), Path::new("/x/plot-2.svg"));
        assert_eq!(numbered(Path::new("plot"), 0, 2), Path::new("plot-1"));
    }
}
