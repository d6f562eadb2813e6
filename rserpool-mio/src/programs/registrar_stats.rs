//! RSPLIB's registrar statistics files, written by `rspregistrar` from what the
//! [`Registrar`](rserpool_core::registrar::Registrar) machine counts ([`RegistrarStatistics`], [`ActionRecord`]):
//!
//! * `-statsfile=FILE` / `-statsinterval=MS`: a header line, then one line at start and one
//!   every interval:
//!   `AbsTime RelTime Runtime UserTime SystemTime   Peers Pools PoolElements
//!   OwnedPoolElements   Registrations Reregistrations Deregistrations HandleResolutions
//!   FailureReports Synchronizations HandleUpdates EndpointKeepAlives` (each data line starts
//!   with its number, `%06u`; times in seconds with 6 decimals: wall clock, since the first
//!   line, process run time, user and system CPU time);
//! * `-actionlogfile=FILE`: a header line, then one line per action:
//!   `AbsTime RelTime   Direction Protocol Action Reason   Flags Counter Time   PoolHandle
//!   PoolElementID   SenderID ReceiverID TargetID   ErrorCode` (line number first; strings
//!   quoted; identifiers `0x%x`; the error code in hex without prefix);
//! * `-scalar=FILE` / `-object=NAME`: the OMNeT++ scalar file at exit (`run 1 "scenario"`,
//!   then `scalar "NAME" "Registrar Total ..."` counters and time-weighted averages).
//!
//! Names ending in `.bz2` are written bzip2-compressed (level 9, as RSPLIB), the scalar file
//! excepted (RSPLIB writes it plain).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bzip2::Compression;
use bzip2::write::BzEncoder;
use rserpool_core::Instant;
use rserpool_core::registrar::{ActionRecord, RegistrarStatistics, StatisticsAverages};
use rserpool_proto::ids::PoolHandle;

/// The statistics file's header line (RSPLIB's, verbatim).
pub const STATS_HEADER: &str = "AbsTime RelTime Runtime UserTime SystemTime   Peers Pools PoolElements OwnedPoolElements   Registrations Reregistrations Deregistrations HandleResolutions FailureReports Synchronizations HandleUpdates EndpointKeepAlives\n";

/// The action log's header line (RSPLIB's, verbatim).
pub const ACTION_LOG_HEADER: &str = "AbsTime RelTime   Direction Protocol Action Reason   Flags Counter Time   PoolHandle PoolElementID   SenderID ReceiverID TargetID   ErrorCode\n";

/// The statistics interval when `-statsfile=` comes without `-statsinterval=` (RSPLIB then
/// writes nothing at all).
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(1);

/// A statistics output file: plain (flushed after every write, as RSPLIB does) or
/// bzip2-compressed (`.bz2` names; complete once [`OutFile::finish`] ran).
pub enum OutFile {
    /// Plain text.
    Plain(File),
    /// bzip2 stream.
    Bz2(BzEncoder<File>),
}

impl std::fmt::Debug for OutFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutFile::Plain(_) => "OutFile::Plain",
            OutFile::Bz2(_) => "OutFile::Bz2",
        })
    }
}

/// True if `path` names a bzip2 file (ends in `.bz2`).
pub fn is_bz2(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "bz2")
}

impl OutFile {
    /// Creates (truncates) `path`; `.bz2` names get a bzip2 stream.
    pub fn create(path: &Path) -> io::Result<OutFile> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(if is_bz2(path) {
            OutFile::Bz2(BzEncoder::new(f, Compression::best()))
        } else {
            OutFile::Plain(f)
        })
    }

    /// Writes `data` (a plain file is written through at once).
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            OutFile::Plain(f) => f.write_all(data),
            OutFile::Bz2(z) => z.write_all(data),
        }
    }

    /// Ends the file (the bzip2 stream's trailer).
    pub fn finish(self) -> io::Result<()> {
        match self {
            OutFile::Plain(mut f) => f.flush(),
            OutFile::Bz2(z) => z.finish().and_then(|mut f| f.flush()),
        }
    }
}

/// Seconds since the Unix epoch of a wall-clock time.
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The wall clock now, seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    unix_seconds(SystemTime::now())
}

/// Maps the driver's monotonic [`Instant`]s onto the wall clock (for AbsTime).
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    at: Instant,
    wall: f64,
}

impl WallClock {
    /// `at` is now, `wall` the wall clock now.
    pub fn new(at: Instant, wall: SystemTime) -> WallClock {
        WallClock {
            at,
            wall: unix_seconds(wall),
        }
    }

    /// Seconds since the Unix epoch at `t`.
    pub fn seconds(&self, t: Instant) -> f64 {
        if t >= self.at {
            self.wall + t.saturating_duration_since(self.at).as_secs_f64()
        } else {
            self.wall - self.at.saturating_duration_since(t).as_secs_f64()
        }
    }
}

/// CPU times of this process (user, system), from `/proc/self/stat` (clock ticks of 10 ms,
/// as RSPLIB reads them); zero where that cannot be read.
pub fn process_cpu_times() -> (Duration, Duration) {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return (Duration::ZERO, Duration::ZERO);
    };
    parse_proc_stat(&s).unwrap_or((Duration::ZERO, Duration::ZERO))
}

/// User and system time from a `/proc/<pid>/stat` line (fields 14 and 15).
pub fn parse_proc_stat(s: &str) -> Option<(Duration, Duration)> {
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = s.get(s.rfind(')')? + 1..)?;
    let mut f = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((
        Duration::from_millis(utime.saturating_mul(10)),
        Duration::from_millis(stime.saturating_mul(10)),
    ))
}

/// One data line of the statistics file (after the header).
pub struct StatsLine {
    /// Line number (1 for the first).
    pub number: u64,
    /// Wall clock, seconds since the epoch.
    pub abs_time: f64,
    /// Seconds since the first line.
    pub rel_time: f64,
    /// Process run time.
    pub runtime: Duration,
    /// User CPU time.
    pub user_time: Duration,
    /// System CPU time.
    pub system_time: Duration,
    /// The counters.
    pub stats: RegistrarStatistics,
}

impl StatsLine {
    /// The line, as RSPLIB formats it.
    pub fn format(&self) -> String {
        let s = &self.stats;
        format!(
            "{:06} {:.6} {:.6}   {:.6} {:.6} {:.6}   {} {} {} {}   {} {} {} {} {} {} {} {}\n",
            self.number,
            self.abs_time,
            self.rel_time,
            self.runtime.as_secs_f64(),
            self.user_time.as_secs_f64(),
            self.system_time.as_secs_f64(),
            s.peers,
            s.pools,
            s.pool_elements,
            s.owned_pool_elements,
            s.registrations,
            s.reregistrations,
            s.deregistrations,
            s.handle_resolutions,
            s.failure_reports,
            s.synchronizations,
            s.handle_updates,
            s.endpoint_keep_alives,
        )
    }
}

/// A pool handle as RSPLIB prints it: control characters as `{xx}`, other bytes as they are.
pub fn pool_handle_description(ph: &PoolHandle, out: &mut Vec<u8>) {
    for &b in ph.as_bytes() {
        if b < 0x20 || b == 0x7f {
            out.extend_from_slice(format!("{{{b:02x}}}").as_bytes());
        } else {
            out.push(b);
        }
    }
}

/// One action log line (RSPLIB's format); `number` counts from 1, `start` is the
/// registrar's start (RelTime 0).
pub fn action_line(number: u64, r: &ActionRecord, clock: &WallClock, start: Instant) -> Vec<u8> {
    let abs = clock.seconds(r.at);
    let rel = r.at.saturating_duration_since(start).as_secs_f64();
    let mut out = format!(
        "{:06}   {:.6} {:.6}   \"{}\" \"{}\" \"{}\" \"{}\"   0x{:x} {} {:.6}   \"",
        number,
        abs,
        rel,
        r.direction.as_str(),
        r.protocol,
        r.action,
        r.reason,
        r.flags,
        r.counter,
        r.time.as_secs_f64(),
    )
    .into_bytes();
    if let Some(ph) = &r.pool_handle {
        pool_handle_description(ph, &mut out);
    }
    out.extend_from_slice(
        format!(
            "\" 0x{:x}   0x{:x} 0x{:x} 0x{:x}   {:x}\n",
            r.pe_id, r.sender.0, r.receiver.0, r.target.0, r.error_code
        )
        .as_bytes(),
    );
    out
}

/// The scalar file (RSPLIB's `registrarPrintScalarStatistics`, same spacing).
pub fn scalar_file(object: &str, s: &RegistrarStatistics, a: &StatisticsAverages) -> String {
    let mut o = String::from("run 1 \"scenario\"\n");
    let total = [
        ("Registrar Total Registrations\"        ", s.registrations),
        ("Registrar Total Reregistrations\"      ", s.reregistrations),
        ("Registrar Total Deregistrations\"      ", s.deregistrations),
        (
            "Registrar Total Handle Resolutions\"   ",
            s.handle_resolutions,
        ),
        ("Registrar Total Failure Reports\"      ", s.failure_reports),
        (
            "Registrar Total Synchronizations\"     ",
            s.synchronizations,
        ),
        ("Registrar Total Handle Updates\"       ", s.handle_updates),
        (
            "Registrar Total Endpoint Keep Alives\" ",
            s.endpoint_keep_alives,
        ),
    ];
    for (name, v) in total {
        o.push_str(&format!("scalar \"{object}\" \"{name}{v:8}\n"));
    }
    let avg = [
        (
            "Registrar Average Number Of Pools\"               ",
            a.pools,
        ),
        (
            "Registrar Average Number Of Pool Elements\"       ",
            a.pool_elements,
        ),
        (
            "Registrar Average Number Of Owned Pool Elements\" ",
            a.owned_pool_elements,
        ),
        (
            "Registrar Average Number Of Peers\"               ",
            a.peers,
        ),
    ];
    for (name, v) in avg {
        o.push_str(&format!("scalar \"{object}\" \"{name}{v:.6}\n"));
    }
    o
}

/// Adds the counters of `b` to `a` (the sizes are `b`'s): statistics over several lives of
/// the failure-test mode, as RSPLIB carries its counters over.
pub fn accumulate(a: &RegistrarStatistics, b: &RegistrarStatistics) -> RegistrarStatistics {
    RegistrarStatistics {
        registrations: a.registrations + b.registrations,
        reregistrations: a.reregistrations + b.reregistrations,
        deregistrations: a.deregistrations + b.deregistrations,
        handle_resolutions: a.handle_resolutions + b.handle_resolutions,
        failure_reports: a.failure_reports + b.failure_reports,
        synchronizations: a.synchronizations + b.synchronizations,
        handle_updates: a.handle_updates + b.handle_updates,
        endpoint_keep_alives: a.endpoint_keep_alives + b.endpoint_keep_alives,
        ..*b
    }
}

/// The time-weighted averages of several registrar lives (failure-test mode) combined:
/// each life's averages weighted by its length, so the scalar file's averages cover the
/// whole time the registrar was up, as its totals ([`accumulate`]) do.
#[derive(Clone, Copy, Debug, Default)]
pub struct LifeAverages {
    /// Σ average × life length (s) of the earlier lives: pools, PEs, own PEs, peers.
    weighted: [f64; 4],
    /// Σ life length (s) of the earlier lives.
    seconds: f64,
}

impl LifeAverages {
    /// The averages over the earlier lives and one more of `life` with `averages`; that
    /// life is counted in from now on.
    pub fn add_life(
        &mut self,
        averages: &StatisticsAverages,
        life: Duration,
    ) -> StatisticsAverages {
        let v = [
            averages.pools,
            averages.pool_elements,
            averages.owned_pool_elements,
            averages.peers,
        ];
        let t = life.as_secs_f64();
        for (w, v) in self.weighted.iter_mut().zip(v) {
            *w += v * t;
        }
        self.seconds += t;
        let combined = if self.seconds > 0.0 {
            self.weighted.map(|w| w / self.seconds)
        } else {
            // No time has passed at all: the current values.
            v
        };
        StatisticsAverages {
            pools: combined[0],
            pool_elements: combined[1],
            owned_pool_elements: combined[2],
            peers: combined[3],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_of_lives_are_weighted_by_their_lengths() {
        let avg = |pools: f64, pes: f64| StatisticsAverages {
            pools,
            pool_elements: pes,
            owned_pool_elements: pes / 2.0,
            peers: 1.0,
        };
        let mut l = LifeAverages::default();
        // One life: its own averages.
        let a = l.add_life(&avg(2.0, 10.0), Duration::from_secs(10));
        assert_eq!(a, avg(2.0, 10.0));
        // A life three times as long with other averages: 1/4 : 3/4.
        let a = l.add_life(&avg(6.0, 30.0), Duration::from_secs(30));
        assert_eq!(a, avg(5.0, 25.0));
        // A life of no length changes nothing; nothing at all: the values given.
        assert_eq!(
            l.add_life(&avg(100.0, 100.0), Duration::ZERO),
            avg(5.0, 25.0)
        );
        let mut empty = LifeAverages::default();
        assert_eq!(
            empty.add_life(&avg(3.0, 4.0), Duration::ZERO),
            avg(3.0, 4.0)
        );
    }
    use rserpool_core::registrar::ActionDirection;
    use rserpool_proto::ids::ServerId;

    #[test]
    fn stats_line_format() {
        let l = StatsLine {
            number: 3,
            abs_time: 1_700_000_000.25,
            rel_time: 2.0,
            runtime: Duration::from_millis(2500),
            user_time: Duration::from_millis(30),
            system_time: Duration::from_millis(10),
            stats: RegistrarStatistics {
                peers: 1,
                pools: 2,
                pool_elements: 3,
                owned_pool_elements: 4,
                registrations: 5,
                reregistrations: 6,
                deregistrations: 7,
                handle_resolutions: 8,
                failure_reports: 9,
                synchronizations: 10,
                handle_updates: 11,
                endpoint_keep_alives: 12,
            },
        };
        assert_eq!(
            l.format(),
            "000003 1700000000.250000 2.000000   2.500000 0.030000 0.010000   1 2 3 4   5 6 7 8 9 10 11 12\n"
        );
    }

    #[test]
    fn action_line_format() {
        let start = Instant::from_millis(1_000);
        let clock = WallClock::new(start, UNIX_EPOCH + Duration::from_secs(100));
        let mut r = ActionRecord::new(
            start + Duration::from_millis(1500),
            ActionDirection::Send,
            "ASAP",
            "HandleResolutionResponse",
            "Requested",
        );
        r.counter = 2;
        r.pool_handle = Some(PoolHandle::new(&b"Echo\x01"[..]));
        r.pe_id = 0x1234;
        r.sender = ServerId(0xab);
        r.error_code = 0x1c;
        let l = action_line(7, &r, &clock, start);
        assert_eq!(
            String::from_utf8(l).unwrap(),
            "000007   101.500000 1.500000   \"Send\" \"ASAP\" \"HandleResolutionResponse\" \"Requested\"   0x0 2 0.000000   \"Echo{01}\" 0x1234   0xab 0x0 0x0   1c\n"
        );
    }

    #[test]
    fn scalar_format() {
        let s = RegistrarStatistics {
            registrations: 3,
            ..Default::default()
        };
        let a = StatisticsAverages {
            pools: 0.5,
            ..Default::default()
        };
        let f = scalar_file("pr1", &s, &a);
        let lines: Vec<&str> = f.lines().collect();
        assert_eq!(lines.len(), 13);
        assert_eq!(lines[0], "run 1 \"scenario\"");
        assert_eq!(
            lines[1],
            "scalar \"pr1\" \"Registrar Total Registrations\"               3"
        );
        assert_eq!(
            lines[8],
            "scalar \"pr1\" \"Registrar Total Endpoint Keep Alives\"        0"
        );
        assert_eq!(
            lines[9],
            "scalar \"pr1\" \"Registrar Average Number Of Pools\"               0.500000"
        );
    }

    #[test]
    fn proc_stat_fields() {
        let s =
            "1234 (my prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 1 0 5000 1000 100";
        assert_eq!(
            parse_proc_stat(s),
            Some((Duration::from_millis(2500), Duration::from_millis(300)))
        );
        assert_eq!(parse_proc_stat("garbage"), None);
        let (u, _) = process_cpu_times();
        assert!(u < Duration::from_secs(100_000));
    }

    #[test]
    fn bz2_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("rserpool-bz2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.bz2");
        let mut f = OutFile::create(&p).unwrap();
        f.write(STATS_HEADER.as_bytes()).unwrap();
        f.finish().unwrap();
        let raw = std::fs::read(&p).unwrap();
        assert_eq!(&raw[..3], b"BZh");
        let mut d = bzip2::read::BzDecoder::new(&raw[..]);
        let mut s = String::new();
        io::Read::read_to_string(&mut d, &mut s).unwrap();
        assert_eq!(s, STATS_HEADER);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
