//! Running the reference programs as child processes on 127.0.0.1: the local demo
//! (`rserpool-demo`) and the multi-process integration tests use this.
//!
//! * [`Proc`]: a child process that is killed (SIGKILL) and reaped when dropped.
//! * [`free_ports`]: ports that were free a moment ago (bind `127.0.0.1:0`).
//! * [`CspMonitor`]: a UDP socket receiving the components' CSP reports (the registrars'
//!   status text `"N[M] PEs in P Pools, Q Peers"` tells what each one holds).
//! * [`TerminalProc`]: `rspterminal` with its standard input and a thread collecting its
//!   answers with their arrival times.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use rserpool_proto::csp::{ComponentId, CspReport};

/// The programs every cluster process needs.
pub const PROGRAMS: [&str; 3] = ["rspregistrar", "rspserver", "rspterminal"];

/// Where the programs are: `$RSERPOOL_BIN_DIR`, else the directory of the running executable
/// (and its parent, for test executables in `target/*/deps`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RSERPOOL_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.join("rspregistrar").exists() {
        return dir;
    }
    dir.parent().map(Path::to_path_buf).unwrap_or(dir)
}

/// How to start a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Programs {
    /// The binaries in this directory.
    Dir(PathBuf),
    /// A multi-call executable: `EXE --run-program NAME ARGS…` (what `rserpool-demo` does
    /// when the separate binaries were not built).
    MultiCall(PathBuf),
}

/// The first argument that makes a multi-call executable run one of [`PROGRAMS`].
pub const RUN_PROGRAM: &str = "--run-program";

impl Programs {
    /// The binaries in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Programs {
        Programs::Dir(dir.into())
    }

    /// True if every one of [`PROGRAMS`] is there.
    pub fn complete(&self) -> bool {
        match self {
            Programs::Dir(d) => PROGRAMS.iter().all(|p| d.join(p).exists()),
            Programs::MultiCall(exe) => exe.exists(),
        }
    }

    /// A command starting `program`.
    pub fn command(&self, program: &str) -> Command {
        match self {
            Programs::Dir(d) => Command::new(d.join(program)),
            Programs::MultiCall(exe) => {
                let mut c = Command::new(exe);
                c.arg(RUN_PROGRAM).arg(program);
                c
            }
        }
    }
}

impl From<&Programs> for Programs {
    fn from(p: &Programs) -> Programs {
        p.clone()
    }
}

impl From<&Path> for Programs {
    fn from(dir: &Path) -> Programs {
        Programs::in_dir(dir)
    }
}

impl From<&PathBuf> for Programs {
    fn from(dir: &PathBuf) -> Programs {
        Programs::in_dir(dir.clone())
    }
}

impl std::fmt::Display for Programs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Programs::Dir(d) => write!(f, "{}", d.display()),
            Programs::MultiCall(exe) => write!(f, "{} {RUN_PROGRAM} …", exe.display()),
        }
    }
}

/// A child process, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Proc {
    /// A name for messages.
    pub name: String,
    child: Option<Child>,
}

impl Proc {
    /// Starts `program` (from a directory or a [`Programs`]) with `args`; standard input is
    /// closed, output goes to
    /// `/dev/null` unless `log` names a file.
    pub fn spawn(
        programs: impl Into<Programs>,
        program: &str,
        args: &[String],
        name: impl Into<String>,
        log: Option<&Path>,
    ) -> io::Result<Proc> {
        let out = match log {
            Some(p) => Stdio::from(std::fs::File::create(p)?),
            None => Stdio::null(),
        };
        let err = match log {
            Some(p) => Stdio::from(std::fs::OpenOptions::new().append(true).open(p)?),
            None => Stdio::null(),
        };
        let child = programs
            .into()
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
        Ok(Proc {
            name: name.into(),
            child: Some(child),
        })
    }

    /// Wraps a child started elsewhere.
    pub fn from_child(name: impl Into<String>, child: Child) -> Proc {
        Proc {
            name: name.into(),
            child: Some(child),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`, `STOP`, `CONT`) with `kill(1)`.
    pub fn signal(&self, name: &str) -> io::Result<()> {
        // Never `kill 0` (our own process group) for a process already reaped.
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return Err(io::Error::other(format!("kill -{name}: no process")));
        };
        let status = Command::new("kill")
            .args(["-s", name, "--"])
            .arg(pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "kill -{name} {} failed",
                self.pid()
            )))
        }
    }

    /// SIGKILL now (the process is reaped).
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// True once the process has ended (without waiting, and without killing it).
    pub fn has_ended(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Waits at most `limit` for the process to end; its exit code (`None`: killed by a
    /// signal, or still running after `limit` and then killed).
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<i32> {
        let c = self.child.as_mut()?;
        let end = Instant::now() + limit;
        loop {
            match c.try_wait() {
                Ok(Some(s)) => return s.code(),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return None;
                }
            }
        }
    }

    /// SIGTERM, then at most `limit` for a clean exit; the exit code.
    pub fn stop(&mut self, limit: Duration) -> Option<i32> {
        if self.signal("TERM").is_err() {
            return None;
        }
        self.wait_timeout(limit)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The child itself (standard streams).
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` distinct ports on 127.0.0.1 that were free (TCP and UDP) a moment ago, picked at
/// random **below the kernel's ephemeral range** (`net.ipv4.ip_local_port_range`): a port
/// from that range could be handed to some outgoing connection before the program meant to
/// listen on it starts.
pub fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = if low > 12_000 {
        (10_000u16, low - 1)
    } else {
        (61_000u16, 65_535u16)
    };
    let span = u64::from(to - from) + 1;
    // A cheap random start (the clock and the process), then a walk with a prime stride.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 20);
    let mut x = seed % span;
    let mut held: Vec<(TcpListener, UdpSocket)> = Vec::new();
    let mut out = Vec::new();
    for _ in 0..span {
        if out.len() == n {
            break;
        }
        x = (x + 7919) % span;
        let port = from + x as u16;
        if out.contains(&port) {
            continue;
        }
        if let (Ok(t), Ok(u)) = (
            TcpListener::bind(("127.0.0.1", port)),
            UdpSocket::bind(("127.0.0.1", port)),
        ) {
            held.push((t, u));
            out.push(port);
        }
    }
    if out.len() == n {
        Ok(out)
    } else {
        Err(io::Error::other("no free ports"))
    }
}

/// Waits until something accepts TCP connections at `addr` (at most `limit`).
pub fn wait_for_listener(addr: SocketAddr, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// What a registrar's CSP status text says: `"N[M] PEs in P Pool(s), Q Peer(s)"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrarStatus {
    /// PEs in the handlespace.
    pub pes: u32,
    /// PEs it is home of.
    pub owned: u32,
    /// Pools.
    pub pools: u32,
    /// Peer-list entries.
    pub peers: u32,
}

impl RegistrarStatus {
    /// Parses RSPLIB's registrar status text.
    pub fn parse(s: &str) -> Option<RegistrarStatus> {
        let (pes, rest) = s.split_once('[')?;
        let (owned, rest) = rest.split_once("] PEs in ")?;
        let (pools, rest) = rest.split_once(" Pool")?;
        let rest = rest.trim_start_matches('s').strip_prefix(", ")?;
        let (peers, _) = rest.split_once(" Peer")?;
        Some(RegistrarStatus {
            pes: pes.trim().parse().ok()?,
            owned: owned.parse().ok()?,
            pools: pools.parse().ok()?,
            peers: peers.parse().ok()?,
        })
    }
}

/// A CSP receiver on 127.0.0.1 (an ephemeral port), keeping the latest report of every
/// component.
#[derive(Debug)]
pub struct CspMonitor {
    socket: UdpSocket,
    latest: HashMap<ComponentId, (Instant, CspReport)>,
}

impl CspMonitor {
    /// A monitor on an ephemeral port of 127.0.0.1.
    pub fn new() -> io::Result<CspMonitor> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        Ok(CspMonitor {
            socket,
            latest: HashMap::new(),
        })
    }

    /// Where components send their reports (`-cspserver=`).
    pub fn addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives reports for up to `wait` (at least one read attempt).
    pub fn poll(&mut self, wait: Duration) {
        let end = Instant::now() + wait;
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let t = left.max(Duration::from_millis(1));
            if self.socket.set_read_timeout(Some(t)).is_err() {
                return;
            }
            if let Ok(n) = self.socket.recv(&mut buf)
                && let Some(r) = buf.get(..n).and_then(|b| CspReport::decode(b).ok())
            {
                if r.flags & rserpool_proto::csp::CSPF_FINAL != 0 {
                    self.latest.remove(&r.sender_id);
                } else {
                    self.latest.insert(r.sender_id, (Instant::now(), r));
                }
            }
            if Instant::now() >= end {
                return;
            }
        }
    }

    /// The latest report of `id` if it is younger than `max_age`.
    pub fn report(&self, id: ComponentId, max_age: Duration) -> Option<&CspReport> {
        self.latest
            .get(&id)
            .filter(|(t, _)| t.elapsed() <= max_age)
            .map(|(_, r)| r)
    }

    /// The latest status of registrar `id` (younger than `max_age`).
    pub fn registrar(&self, id: ComponentId, max_age: Duration) -> Option<RegistrarStatus> {
        RegistrarStatus::parse(&self.report(id, max_age)?.status.to_string_lossy())
    }

    /// The registrars heard from within `max_age`, with their status.
    pub fn registrars(&self, max_age: Duration) -> Vec<(ComponentId, RegistrarStatus)> {
        let mut v: Vec<(ComponentId, RegistrarStatus)> = self
            .latest
            .iter()
            .filter(|(id, (t, _))| {
                id.group() == rserpool_proto::csp::ComponentGroup::Registrar
                    && t.elapsed() <= max_age
            })
            .filter_map(|(id, (_, r))| {
                RegistrarStatus::parse(&r.status.to_string_lossy()).map(|s| (*id, s))
            })
            .collect();
        v.sort_by_key(|(id, _)| id.0);
        v
    }

    /// Polls until `pred` holds for the registrars' statuses (at most `limit`).
    pub fn wait_until(
        &mut self,
        limit: Duration,
        max_age: Duration,
        mut pred: impl FnMut(&[(ComponentId, RegistrarStatus)]) -> bool,
    ) -> bool {
        let end = Instant::now() + limit;
        loop {
            if pred(&self.registrars(max_age)) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            self.poll(Duration::from_millis(50));
        }
    }
}

/// One answer `rspterminal` printed: `from PE $xxxxxxxx> text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// When the demo read it.
    pub at: Instant,
    /// The PE that sent it.
    pub pe: u32,
    /// The text.
    pub text: String,
}

impl Answer {
    /// Parses one output line.
    pub fn parse(line: &str, at: Instant) -> Option<Answer> {
        let rest = line.strip_prefix("from PE $")?;
        let (hex, text) = rest.split_once("> ")?;
        Some(Answer {
            at,
            pe: u32::from_str_radix(hex, 16).ok()?,
            text: text.to_owned(),
        })
    }
}

/// `rspterminal` as a child: lines go to its standard input, its answers are collected.
#[derive(Debug)]
pub struct TerminalProc {
    /// The process.
    pub proc: Proc,
    stdin: Option<ChildStdin>,
    answers: Receiver<Answer>,
    stderr: Receiver<String>,
}

impl TerminalProc {
    /// Starts `rspterminal` with `args`.
    pub fn spawn(programs: impl Into<Programs>, args: &[String]) -> io::Result<TerminalProc> {
        let mut child = programs
            .into()
            .command("rspterminal")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("rspterminal: {e}")))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("rspterminal: no stdout"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("rspterminal: no stderr"))?;
        let (atx, answers) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(a) = Answer::parse(&line, Instant::now())
                    && atx.send(a).is_err()
                {
                    return;
                }
            }
        });
        let (etx, stderr_rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if etx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(TerminalProc {
            proc: Proc::from_child("rspterminal", child),
            stdin,
            answers,
            stderr: stderr_rx,
        })
    }

    /// Sends one line (a `\n` is appended).
    pub fn send_line(&mut self, line: &str) -> io::Result<()> {
        let s = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("standard input closed"))?;
        s.write_all(line.as_bytes())?;
        s.write_all(b"\n")?;
        s.flush()
    }

    /// Closes its standard input (it exits once every line is answered).
    pub fn close_input(&mut self) {
        self.stdin = None;
    }

    /// The next answer, waiting at most `wait`.
    pub fn next_answer(&self, wait: Duration) -> Option<Answer> {
        self.answers.recv_timeout(wait).ok()
    }

    /// Every answer that arrived so far, without waiting.
    pub fn answers_now(&self) -> Vec<Answer> {
        self.answers.try_iter().collect()
    }

    /// What it printed on standard error so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    /// After the process ended: every answer and standard error line not taken yet, read
    /// until both streams are closed (at most `limit`).
    pub fn rest_after_exit(&self, limit: Duration) -> (Vec<Answer>, Vec<String>) {
        let end = Instant::now() + limit;
        let mut answers = Vec::new();
        while let Ok(a) = self
            .answers
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            answers.push(a);
        }
        let mut lines = Vec::new();
        while let Ok(l) = self
            .stderr
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            lines.push(l);
        }
        (answers, lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse() {
        assert_eq!(
            RegistrarStatus::parse("5[2] PEs in 1 Pool, 2 Peers"),
            Some(RegistrarStatus {
                pes: 5,
                owned: 2,
                pools: 1,
                peers: 2
            })
        );
        assert_eq!(
            RegistrarStatus::parse("0[0] PEs in 0 Pools, 1 Peer"),
            Some(RegistrarStatus {
                pes: 0,
                owned: 0,
                pools: 0,
                peers: 1
            })
        );
        assert_eq!(RegistrarStatus::parse("1 Session"), None);
        let t = Instant::now();
        assert_eq!(
            Answer::parse("from PE $0000abcd> line 7", t),
            Some(Answer {
                at: t,
                pe: 0xabcd,
                text: "line 7".into()
            })
        );
        assert_eq!(Answer::parse("*** failover ***", t), None);
    }

    #[test]
    fn ports_are_distinct() {
        let p = free_ports(4).unwrap();
        let mut q = p.clone();
        q.sort_unstable();
        q.dedup();
        assert_eq!(q.len(), 4);
    }
}
