//! `rserpool-demo`: registrar, three echo PEs and a pool user on 127.0.0.1; the serving PE
//! is killed and the failover timed. See `rserpool_mio::programs::demo`.

use std::process::ExitCode;

fn main() -> ExitCode {
    rserpool_mio::programs::demo::main()
}
