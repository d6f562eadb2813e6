//! Argument normalisation: RSPLIB's single-dash long options on top of clap.
//!
//! # Why clap plus a shim
//! RSPLIB programs take `-option=value` and `-flag` (single dash, long names). clap 4 cannot
//! parse single-dash long options (clap-rs/clap#2468), but it gives typed derive structs,
//! generated `--help`, good error messages and debug-time consistency checks, and it is the
//! most maintained Rust CLI crate. `getopts` (`long_only`) would accept the RSPLIB syntax
//! natively but has no derive and weaker help. So every program parses with clap after
//! [`normalize_args`] rewrote each `-name[=value]` whose `name` is one of the command's long
//! options (or aliases) into `--name[=value]`. Short options (`-h`, `-V`) and negative
//! numbers (`-1`) pass through unchanged; a value that follows a `--option` is never
//! rewritten. An unknown single-dash long option is reported as an unknown option (RSPLIB
//! prints its usage and exits with 1; [`parse_or_exit`] does the same).
//!
//! Accepted spellings, all equivalent: `-x=v`, `-x v`, `--x=v`, `--x v`.

use std::ffi::OsString;

use clap::Parser;
use clap::error::ErrorKind;

/// Shown under every program's `--help`.
pub const SYNTAX_NOTE: &str = "Options may be written RSPLIB-style with one dash: -name=value and -flag \
(also -name value, --name value, --name=value). Durations are in ms unless marked S (seconds).";

/// Levenshtein distance, for "did you mean" hints on unknown options.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let subst = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(subst.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// Rewrites RSPLIB-style arguments for `cmd` (see the module documentation). The first
/// element of `args` is the program name and is kept. Returns a clap error for an unknown
/// single-dash long option.
pub fn normalize_args<I, S>(cmd: &clap::Command, args: I) -> Result<Vec<OsString>, clap::Error>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut cmd = cmd.clone();
    cmd.build();
    normalize_built(&mut cmd, args)
}

/// [`normalize_args`] for a command that is built already ([`clap::Command::build`]): no copy
/// of it is made and built a second time (each build allocates every argument's strings and
/// tables, and a program's start-up pays for that memory page by page).
fn normalize_built<I, S>(cmd: &mut clap::Command, args: I) -> Result<Vec<OsString>, clap::Error>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    // Long names and aliases → whether the option takes a value.
    let mut longs: Vec<(String, bool)> = Vec::new();
    for arg in cmd.get_arguments() {
        let takes = arg.get_action().takes_values();
        if let Some(l) = arg.get_long() {
            longs.push((l.to_owned(), takes));
        }
        if let Some(aliases) = arg.get_all_aliases() {
            longs.extend(aliases.into_iter().map(|a| (a.to_owned(), takes)));
        }
    }
    let lookup = |name: &str| longs.iter().find(|(l, _)| l == name).map(|(_, t)| *t);

    let mut out = Vec::new();
    let mut iter = args.into_iter().map(Into::into);
    if let Some(program) = iter.next() {
        out.push(program);
    }
    let mut expect_value = false;
    let mut only_positionals = false;
    for a in iter {
        if only_positionals || expect_value {
            expect_value = false;
            out.push(a);
            continue;
        }
        let Some(s) = a.to_str() else {
            out.push(a);
            continue;
        };
        if s == "--" {
            only_positionals = true;
            out.push(a);
            continue;
        }
        if let Some(body) = s.strip_prefix("--") {
            let (name, has_value) = match body.split_once('=') {
                Some((n, _)) => (n, true),
                None => (body, false),
            };
            expect_value = !has_value && lookup(name).unwrap_or(false);
            out.push(a);
            continue;
        }
        let Some(body) = s.strip_prefix('-') else {
            out.push(a);
            continue;
        };
        let first = body.chars().next();
        if first.is_none_or(|c| c.is_ascii_digit() || c == '.') {
            // "-" (stdin by convention) or a negative number.
            out.push(a);
            continue;
        }
        let (name, has_value) = match body.split_once('=') {
            Some((n, _)) => (n, true),
            None => (body, false),
        };
        if let Some(takes) = lookup(name) {
            expect_value = takes && !has_value;
            out.push(OsString::from(format!("--{body}")));
        } else if body.chars().count() == 1 {
            out.push(a);
        } else {
            let mut msg = format!("unknown option '-{name}'");
            if let Some((best, _)) = longs
                .iter()
                .map(|(l, _)| (l, edit_distance(name, l)))
                .filter(|(_, d)| *d <= 2)
                .min_by_key(|(_, d)| *d)
            {
                msg.push_str(&format!("; did you mean '-{best}'?"));
            }
            return Err(cmd.error(ErrorKind::UnknownArgument, msg));
        }
    }
    Ok(out)
}

/// Parses `args` (program name first) into `T`, accepting RSPLIB's syntax.
pub fn try_parse_from<T, I, S>(args: I) -> Result<T, clap::Error>
where
    T: Parser,
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut cmd = T::command();
    cmd.build();
    let args = normalize_built(&mut cmd, args)?;
    let matches = cmd.try_get_matches_from_mut(args)?;
    T::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
}

/// Parses `args` into `T` or exits like RSPLIB: errors and usage on stderr with exit code
/// 1; `--help`/`--version` on stdout with exit code 0.
pub fn parse_from_or_exit<T, I, S>(args: I) -> T
where
    T: Parser,
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    match try_parse_from::<T, I, S>(args) {
        Ok(v) => v,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            // Nothing sensible is left to do if printing fails.
            let _ = e.print();
            std::process::exit(code);
        }
    }
}

/// Parses the process's command line into `T` or exits (see [`parse_from_or_exit`]).
/// The one-line entry point of every binary: `let opts: RegistrarOptions = parse_or_exit();`
pub fn parse_or_exit<T: Parser>() -> T {
    parse_from_or_exit(std::env::args_os())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug, PartialEq)]
    #[command(name = "demo", version)]
    struct Demo {
        #[arg(long = "loglevel", default_value_t = 1)]
        log_level: u8,
        #[arg(long = "registrar")]
        registrars: Vec<String>,
        #[arg(long = "quiet")]
        quiet: bool,
        #[arg(long = "rate", allow_negative_numbers = true, default_value_t = 0)]
        rate: i32,
        #[arg(long = "enrpannounce", alias = "enrpmulticast")]
        enrp_announce: Option<String>,
        #[arg(long = "disable-ipv6")]
        disable_ipv6: bool,
        file: Option<String>,
    }

    fn parse(args: &[&str]) -> Result<Demo, clap::Error> {
        try_parse_from::<Demo, _, _>(std::iter::once("demo").chain(args.iter().copied()))
    }

    #[test]
    fn all_spellings_are_equal() {
        let want = Demo {
            log_level: 3,
            registrars: vec!["a:1".into(), "b:2".into()],
            quiet: true,
            rate: -1,
            enrp_announce: Some("off".into()),
            disable_ipv6: true,
            file: Some("x".into()),
        };
        for args in [
            &[
                "-loglevel=3",
                "-registrar=a:1",
                "-registrar=b:2",
                "-quiet",
                "-rate=-1",
                "-enrpannounce=off",
                "-disable-ipv6",
                "x",
            ][..],
            &[
                "--loglevel",
                "3",
                "--registrar",
                "a:1",
                "--registrar=b:2",
                "--quiet",
                "--rate",
                "-1",
                "--enrpannounce",
                "off",
                "--disable-ipv6",
                "x",
            ],
            &[
                "-loglevel",
                "3",
                "-registrar",
                "a:1",
                "-registrar",
                "b:2",
                "-quiet",
                "-rate",
                "-1",
                "-enrpmulticast=off",
                "-disable-ipv6",
                "--",
                "x",
            ],
        ] {
            assert_eq!(parse(args).unwrap(), want, "{args:?}");
        }
    }

    #[test]
    fn values_that_look_like_options_are_kept() {
        // A value after `--registrar` is not rewritten even if it starts with a dash
        // (clap then decides; it wants `=` for such values).
        let cmd = <Demo as clap::CommandFactory>::command();
        for (input, want) in [
            (
                &["--registrar", "-quiet"][..],
                &["demo", "--registrar", "-quiet"][..],
            ),
            (
                &["-registrar", "-quiet"],
                &["demo", "--registrar", "-quiet"],
            ),
            (
                &["-registrar=-quiet", "-quiet"],
                &["demo", "--registrar=-quiet", "--quiet"],
            ),
            (
                &["-quiet", "-rate", "-5"],
                &["demo", "--quiet", "--rate", "-5"],
            ),
        ] {
            let out =
                normalize_args(&cmd, std::iter::once("demo").chain(input.iter().copied())).unwrap();
            assert_eq!(
                out,
                want.iter().map(OsString::from).collect::<Vec<_>>(),
                "{input:?}"
            );
        }
        let d = parse(&["-registrar=-odd", "-quiet"]).unwrap();
        assert_eq!(d.registrars, vec!["-odd".to_string()]);
        assert!(d.quiet);
        // A positional "-" passes.
        assert_eq!(parse(&["-"]).unwrap().file.as_deref(), Some("-"));
    }

    #[test]
    fn unknown_options_are_errors() {
        let e = parse(&["-bogus=1"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownArgument);
        assert!(e.use_stderr());
        let text = e.to_string();
        assert!(text.contains("unknown option '-bogus'"), "{text}");
        assert!(text.contains("Usage:"), "{text}");
        let e = parse(&["-logleve=3"]).unwrap_err();
        assert!(e.to_string().contains("did you mean '-loglevel'"), "{e}");
        assert_eq!(
            parse(&["--bogus"]).unwrap_err().kind(),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            parse(&["-x"]).unwrap_err().kind(),
            ErrorKind::UnknownArgument
        );
        // A flag with a value is an error too.
        assert!(parse(&["-quiet=yes"]).is_err());
    }

    #[test]
    fn help_and_version_are_not_errors() {
        for h in ["-help", "--help", "-h"] {
            let e = parse(&[h]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{h}");
            assert!(!e.use_stderr());
        }
        let e = parse(&["-version"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayVersion);
    }

    /// Runs `parse_from_or_exit` in a child process (this test binary, filtered to this
    /// test) and checks the exit code and where the text went.
    #[test]
    fn exit_codes_like_rsplib() {
        const VAR: &str = "RSERPOOL_CLI_EXIT_TEST_ARGS";
        if let Ok(args) = std::env::var(VAR) {
            let argv = std::iter::once("demo").chain(args.split(' ').filter(|a| !a.is_empty()));
            let d: Demo = parse_from_or_exit(argv);
            println!("parsed loglevel={}", d.log_level);
            std::process::exit(0);
        }
        let exe = std::env::current_exe().unwrap();
        for (args, code, in_stdout, in_stderr) in [
            ("-bogus=1", 1, "", "unknown option '-bogus'"),
            ("-loglevel=x", 1, "", "invalid value"),
            ("-help", 0, "Usage: demo", ""),
            ("-loglevel=3", 0, "parsed loglevel=3", ""),
        ] {
            let out = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "cli::argv::tests::exit_codes_like_rsplib",
                    "--nocapture",
                ])
                .env(VAR, args)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(code), "{args}: {stdout} / {stderr}");
            assert!(stdout.contains(in_stdout), "{args}: stdout {stdout}");
            assert!(stderr.contains(in_stderr), "{args}: stderr {stderr}");
            if args.starts_with("-bogus") {
                assert!(
                    stderr.contains("Usage: demo"),
                    "{args}: usage on stderr: {stderr}"
                );
            }
        }
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("loglevel", "loglevel"), 0);
        assert_eq!(edit_distance("logleve", "loglevel"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn non_utf8_arguments_pass_through() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![0x66, 0xff, 0x6f]);
        let cmd = <Demo as clap::CommandFactory>::command();
        let out = normalize_args(&cmd, [OsString::from("demo"), odd.clone()]).unwrap();
        assert_eq!(out, vec![OsString::from("demo"), odd]);
    }
}
