//! A pool on 127.0.0.1 over the TCP mapping, as child processes: one registrar, service PEs
//! (`rspserver`) and clients whose standard output is collected line by line with arrival
//! times. The service tests and the failover measurement use it; every process is killed
//! when its guard drops (built on [`super::super::cluster`]).

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use super::super::cluster::{Proc, Programs, free_ports, wait_for_listener};

/// The options every program of the pool gets: TCP mapping, no announces, errors logged.
pub const COMMON: [&str; 2] = ["-asapannounce=off", "-transport=tcp"];

/// A registrar and its PEs.
#[derive(Debug)]
pub struct ServicePool {
    /// Where the programs are.
    pub bin_dir: PathBuf,
    /// Where the logs go (`registrar.log`, `pe-<id>.log`).
    pub logs: PathBuf,
    /// The registrar's ASAP address.
    pub registrar: SocketAddr,
    registrar_proc: Proc,
    pes: Vec<(u32, Proc)>,
}

impl ServicePool {
    /// Starts a registrar on free loopback ports (`-minaddressscope=loopback`, reports of
    /// unreachable PEs effectively ignored with `-maxbadpereports=1000000` so the services'
    /// failure testers do not get PEs removed, `extra` appended) and waits until it listens.
    pub fn start(bin_dir: &Path, logs: &Path, extra: &[&str]) -> io::Result<ServicePool> {
        std::fs::create_dir_all(logs)?;
        let ports = free_ports(2)?;
        let asap = SocketAddr::from(([127, 0, 0, 1], ports[0]));
        let enrp = SocketAddr::from(([127, 0, 0, 1], ports[1]));
        let mut args: Vec<String> = vec![
            format!("-asap={asap}"),
            format!("-enrp={enrp}"),
            "-enrpannounce=off".into(),
            "-minaddressscope=loopback".into(),
            "-maxbadpereports=1000000".into(),
            "-quiet".into(),
            "-loglevel=3".into(),
        ];
        args.extend(COMMON.iter().map(|s| (*s).to_owned()));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let p = Proc::spawn(
            Programs::in_dir(bin_dir),
            "rspregistrar",
            &args,
            "registrar",
            Some(&logs.join("registrar.log")),
        )?;
        if !wait_for_listener(asap, Duration::from_secs(20)) {
            return Err(io::Error::other(format!(
                "registrar does not listen on {asap}"
            )));
        }
        Ok(ServicePool {
            bin_dir: bin_dir.to_path_buf(),
            logs: logs.to_path_buf(),
            registrar: asap,
            registrar_proc: p,
            pes: Vec::new(),
        })
    }

    /// The options that point a program at this pool's registrar.
    pub fn client_args(&self) -> Vec<String> {
        let mut v = vec![format!("-registrar={}", self.registrar)];
        v.extend(COMMON.iter().map(|s| (*s).to_owned()));
        v
    }

    /// The log file of PE `id`.
    pub fn pe_log(&self, id: u32) -> PathBuf {
        self.logs.join(format!("pe-{id:x}.log"))
    }

    /// Starts `rspserver` with identifier `id` and `args` (service switch and options) on
    /// 127.0.0.1, re-registering every second (`-loglevel=3` so the log tells when it is
    /// registered).
    pub fn start_pe(&mut self, id: u32, args: &[&str]) -> io::Result<()> {
        let mut a: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        a.extend(self.client_args());
        a.extend([
            format!("-identifier={id:#x}"),
            "-local=127.0.0.1".into(),
            "-rereginterval=1000".into(),
            "-quiet".into(),
            "-loglevel=3".into(),
        ]);
        let log = self.pe_log(id);
        let p = Proc::spawn(
            Programs::in_dir(&self.bin_dir),
            "rspserver",
            &a,
            format!("PE {id:x}"),
            Some(&log),
        )?;
        self.pes.push((id, p));
        Ok(())
    }

    /// Waits until PE `id`'s log says it registered (at most `limit`).
    pub fn wait_registered(&self, id: u32, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let needle = format!("PE ${id:08x} registered");
        while Instant::now() < end {
            if std::fs::read_to_string(self.pe_log(id)).is_ok_and(|s| s.contains(&needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Starts PE `id` and waits for its registration.
    pub fn start_pe_registered(&mut self, id: u32, args: &[&str]) -> io::Result<()> {
        self.start_pe(id, args)?;
        if self.wait_registered(id, Duration::from_secs(20)) {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "PE {id:#x} did not register (log {})",
                self.pe_log(id).display()
            )))
        }
    }

    /// PE `id`'s process.
    pub fn pe(&mut self, id: u32) -> Option<&mut Proc> {
        self.pes.iter_mut().find(|(i, _)| *i == id).map(|(_, p)| p)
    }

    /// SIGKILL PE `id` now (`kill -9`: the kernel closes its connections) and forget it.
    pub fn kill_pe(&mut self, id: u32) -> bool {
        match self.pes.iter().position(|(i, _)| *i == id) {
            Some(i) => {
                let (_, mut p) = self.pes.remove(i);
                p.kill();
                true
            }
            None => false,
        }
    }

    /// The registrar's process.
    pub fn registrar_proc(&mut self) -> &mut Proc {
        &mut self.registrar_proc
    }
}

/// One line a client printed, with the time it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// When it was read.
    pub at: Instant,
    /// The text.
    pub text: String,
}

/// A client program whose standard output is read line by line (standard error goes to a
/// log file).
#[derive(Debug)]
pub struct ClientProc {
    /// The process.
    pub proc: Proc,
    lines: Receiver<Line>,
}

impl ClientProc {
    /// Starts `program` from `bin_dir` with `args`; standard error to `log`.
    pub fn spawn(bin_dir: &Path, program: &str, args: &[String], log: &Path) -> io::Result<Self> {
        let mut child = Command::new(bin_dir.join(program))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(log)?))
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(text) = line else { return };
                if tx
                    .send(Line {
                        at: Instant::now(),
                        text,
                    })
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(ClientProc {
            proc: Proc::from_child(program, child),
            lines,
        })
    }

    /// The next line, waiting at most `wait`.
    pub fn next_line(&self, wait: Duration) -> Option<Line> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Waits (at most `wait`) for a line satisfying `pred`, returning it and the lines
    /// skipped on the way.
    pub fn wait_for(&self, wait: Duration, mut pred: impl FnMut(&str) -> bool) -> Option<Line> {
        let end = Instant::now() + wait;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let l = self.next_line(left)?;
            if pred(&l.text) {
                return Some(l);
            }
        }
    }

    /// Every line that arrived so far, without waiting.
    pub fn lines_now(&self) -> Vec<Line> {
        self.lines.try_iter().collect()
    }

    /// Waits for the exit (at most `limit`, then kills); the remaining lines and the code.
    pub fn finish(mut self, limit: Duration) -> (Vec<Line>, Option<i32>) {
        let code = self.proc.wait_timeout(limit);
        // The reader thread ends at EOF; give it a moment to pass the last lines on.
        let mut v = Vec::new();
        while let Some(l) = self.next_line(Duration::from_millis(200)) {
            v.push(l);
        }
        (v, code)
    }
}

/// Parses `pingpongclient`'s `Ack #M from PE $id (reply #R)`: (message, PE, reply).
pub fn parse_ack(line: &str) -> Option<(u64, u32, u64)> {
    let rest = line.strip_prefix("Ack #")?;
    let (m, rest) = rest.split_once(" from PE $")?;
    let (pe, rest) = rest.split_once(" (reply #")?;
    let r = rest.strip_suffix(')')?;
    Some((
        m.parse().ok()?,
        u32::from_str_radix(pe, 16).ok()?,
        r.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_parse() {
        assert_eq!(
            parse_ack("Ack #12 from PE $0000abcd (reply #13)"),
            Some((12, 0xabcd, 13))
        );
        assert_eq!(parse_ack("*** Failover ***"), None);
    }
}
