//! `-daemonpidfile=FILE`: run in the background.
//!
//! RSPLIB forks; forking a process that may already hold threads and sockets needs `unsafe`
//! here, so the program instead starts **itself again** with the same arguments as a
//! background child in its own process group (so that the terminal's Ctrl-C does not reach
//! it), with standard input and output on `/dev/null`, writes the child's PID to `FILE` and
//! exits. The child knows it is the child from the environment variable
//! [`DAEMON_CHILD_ENV`] and runs normally (in daemon mode: `rspserver` keeps retrying a
//! failed first registration, as RSPLIB's `REGF_DAEMONMODE` does).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

/// Set in the environment of the background child.
pub const DAEMON_CHILD_ENV: &str = "RSERPOOL_DAEMON_CHILD";

/// True in the background child started by [`detach`].
pub fn is_daemon_child() -> bool {
    std::env::var_os(DAEMON_CHILD_ENV).is_some()
}

/// In the foreground process: starts the background child, writes its PID to `pid_file`
/// and returns the exit code for the foreground process. In the child: `None` (carry on).
pub fn detach_if_asked(program: &str, pid_file: Option<&Path>) -> Option<ExitCode> {
    let pid_file = pid_file?;
    if is_daemon_child() {
        return None;
    }
    Some(detach(program, pid_file))
}

/// Starts this program again in the background and writes the child's PID to `pid_file`.
pub fn detach(program: &str, pid_file: &Path) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return super::common::fail(program, &e),
    };
    let child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(DAEMON_CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    match child {
        Ok(c) => match std::fs::write(pid_file, format!("{}\n", c.id())) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => super::common::fail(
                program,
                &format!("cannot write PID file {}: {e}", pid_file.display()),
            ),
        },
        Err(e) => super::common::fail(program, &format!("cannot start in the background: {e}")),
    }
}
