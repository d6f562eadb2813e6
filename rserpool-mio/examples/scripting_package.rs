//! Builds a scripting work package (a gzip-compressed tar archive of a directory with an
//! `ssrun` script at its top level), without `make` or a `tar` command:
//!
//! ```text
//! cargo run -p rserpool-mio --example scripting_package -- rserpool-mio/examples/scripting /tmp/ssIN.tar.gz
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, out] = args.as_slice() else {
        eprintln!("usage: scripting_package <directory with ssrun> <output .tar.gz>");
        return ExitCode::FAILURE;
    };
    match rserpool_mio::programs::services::scripting_host::pack_work_package(
        &PathBuf::from(dir),
        &PathBuf::from(out),
    ) {
        Ok(n) => {
            println!("{out}: {n} file(s)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("scripting_package: {e}");
            ExitCode::FAILURE
        }
    }
}
