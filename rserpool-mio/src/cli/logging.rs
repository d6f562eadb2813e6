//! Logging set-up from [`LogOptions`] with `tracing` + `tracing-subscriber` (fmt).
//!
//! The level comes from `-loglevel=` (mapping in [`LogOptions`]), output goes to stderr or
//! the `-logfile=`/`-logappend=` file, colour follows `-logcolor=`. `log` records (from mio)
//! are forwarded into `tracing` by tracing-subscriber's default `tracing-log` feature.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal};
use std::sync::Mutex;

use tracing::Subscriber;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use super::common::{LogColor, LogOptions, LogOutput};

/// Why logging could not be set up.
#[derive(Debug)]
pub enum LogInitError {
    /// The log file could not be opened.
    Open(std::path::PathBuf, io::Error),
    /// A global subscriber was already installed.
    AlreadyInitialised,
}

impl std::fmt::Display for LogInitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogInitError::Open(p, e) => write!(f, "cannot open log file {}: {e}", p.display()),
            LogInitError::AlreadyInitialised => f.write_str("logging is already initialised"),
        }
    }
}

impl std::error::Error for LogInitError {}

fn open(output: &LogOutput) -> Result<Option<File>, LogInitError> {
    let (path, append) = match output {
        LogOutput::Stderr => return Ok(None),
        LogOutput::Truncate(p) => (p, false),
        LogOutput::Append(p) => (p, true),
    };
    let mut o = OpenOptions::new();
    o.create(true);
    if append {
        o.append(true);
    } else {
        o.write(true).truncate(true);
    }
    o.open(path)
        .map(Some)
        .map_err(|e| LogInitError::Open(path.clone(), e))
}

/// Builds the subscriber for `opts` without installing it (tests and embedders use this
/// with `tracing::subscriber::with_default`).
pub fn build_subscriber(opts: &LogOptions) -> Result<impl Subscriber + Send + Sync, LogInitError> {
    let file = open(&opts.output())?;
    let to_terminal = file.is_none() && io::stderr().is_terminal();
    let ansi = match opts.log_color {
        LogColor::On => true,
        LogColor::Off => false,
        LogColor::Auto => to_terminal,
    };
    let writer = match file {
        Some(f) => BoxMakeWriter::new(Mutex::new(f)),
        None => BoxMakeWriter::new(io::stderr),
    };
    Ok(tracing_subscriber::fmt()
        .with_max_level(opts.level_filter())
        .with_ansi(ansi)
        .with_writer(writer)
        .finish())
}

/// Installs the global `tracing` subscriber for `opts` (call once, early in `main`).
pub fn init_logging(opts: &LogOptions) -> Result<(), LogInitError> {
    use tracing_subscriber::util::SubscriberInitExt;
    // try_init installs the global subscriber and the `log` → `tracing` bridge.
    build_subscriber(opts)?
        .try_init()
        .map_err(|_| LogInitError::AlreadyInitialised)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp_path(name: &str) -> PathBuf {
        let mut p = std::env::temp_dir();
        p.push(format!("rserpool-cli-{}-{name}", std::process::id()));
        p
    }

    #[test]
    fn file_output_respects_level() {
        let path = temp_path("level.log");
        let opts = LogOptions {
            log_level: 2,
            log_file: Some(path.clone()),
            log_color: LogColor::On,
            ..LogOptions::default()
        };
        let sub = build_subscriber(&opts).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::error!("an-error");
            tracing::warn!("a-warning");
            tracing::info!("a-note");
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("an-error") && text.contains("a-warning"),
            "{text}"
        );
        assert!(!text.contains("a-note"), "{text}");
        assert!(text.contains("\u{1b}["), "-logcolor=on colours files too");

        // -logfile truncates; -logappend appends.
        let opts2 = LogOptions {
            log_level: 3,
            log_file: Some(path.clone()),
            log_color: LogColor::Auto,
            ..LogOptions::default()
        };
        tracing::subscriber::with_default(build_subscriber(&opts2).unwrap(), || {
            tracing::info!("second-run");
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("second-run") && !text.contains("an-error"),
            "{text}"
        );
        assert!(!text.contains("\u{1b}["), "auto colour is off for files");
        let opts3 = LogOptions {
            log_file: None,
            log_append: Some(path.clone()),
            ..opts2
        };
        tracing::subscriber::with_default(build_subscriber(&opts3).unwrap(), || {
            tracing::info!("third-run");
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("second-run") && text.contains("third-run"),
            "{text}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn quiet_logs_nothing() {
        let path = temp_path("quiet.log");
        let opts = LogOptions {
            log_level: 9,
            log_quiet: true,
            log_file: Some(path.clone()),
            ..LogOptions::default()
        };
        tracing::subscriber::with_default(build_subscriber(&opts).unwrap(), || {
            tracing::error!("must-not-appear");
        });
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn unopenable_file_is_an_error() {
        let opts = LogOptions {
            log_file: Some("/nonexistent-dir/x/y.log".into()),
            ..LogOptions::default()
        };
        let e = build_subscriber(&opts).err().unwrap();
        assert!(matches!(e, LogInitError::Open(..)));
        assert!(e.to_string().contains("/nonexistent-dir/x/y.log"));
    }
}
