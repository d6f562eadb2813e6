//! `cspmonitor`: the table of components built from CSP reports and its screen, in the
//! layout of RSPLIB's `cspmonitor` (`shared/spec/csp.md` §6).
//!
//! [`CspTable`] is pure: reports go in with [`CspTable::handle_datagram`] (time passed in),
//! [`CspTable::purge`] forgets silent components, [`CspTable::render`] returns one screen.
//!
//! Acceptance and purging follow RSPLIB: only Type 1 / Version 0x0200 reports of exactly
//! `288 + 24·n` bytes ([`CspReport::decode`]); the latest report per sender id is kept; a
//! report with any flag set (F = final) makes the component go at the next purge; a
//! component goes when `last report + min(purge interval, 10 × its report interval) < now`.
//!
//! The screen: a header line (`<time>: Current Component Status -- x PRs, y PEs, z PUs`), an
//! empty line, then one line per component, grouped PR, PE, PU and sorted by location, then
//! id: `<PR|PE|PU> $<id> [<location>] U=<uptime> l=<age>s A=<associations>[ L=<load>%]
//! "<status>"`, the label padded so that the `U=` columns line up; in full mode each
//! association follows as `   -> <PR|PE|PU> $<id> <PPID name>/<protocol>[
//! duration=h:mm:ss]`. Beyond `-maxpr`/`-maxpe`/`-maxpu` components of a group, one line
//! `(n further PRs have been hidden)` stands for the rest. With colours (RSPLIB's look:
//! registrars red, PEs blue, PUs green, bold labels, loads of 90 % and above reversed) the
//! screen starts with cursor-home and erases what the previous screen left; plain mode is the
//! same text without escape sequences.
//!
//! Differences from RSPLIB, on purpose: labels are padded to the widest label of the same
//! screen (RSPLIB uses the previous screen's), control characters in the reported texts are
//! shown as `?` (a report cannot move the cursor or recolour the terminal), the time stamp is
//! UTC, and the PPID names include RSPLIB's services (FractGen, PingPong, CalcApp,
//! Scripting) besides Data, ASAP and ENRP.

use rserpool_core::Instant;
use rserpool_proto::csp::{
    ComponentGroup, ComponentId, CspAssociation, CspError, CspProtocol, CspReport, Workload,
    ppid_name,
};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How a screen looks (`-full`, `-maxpr=` …, `-plain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorView {
    /// Full mode: association lists under every component.
    pub full: bool,
    /// Registrars shown.
    pub max_pr: u32,
    /// Pool elements shown.
    pub max_pe: u32,
    /// Pool users shown.
    pub max_pu: u32,
    /// Width of the location column (at most 127, as in RSPLIB).
    pub max_location_size: u32,
    /// ANSI colours and cursor control (RSPLIB's look); plain text otherwise.
    pub color: bool,
}

impl Default for MonitorView {
    fn default() -> Self {
        MonitorView {
            full: false,
            max_pr: 6,
            max_pe: 42,
            max_pu: 24,
            max_location_size: 72,
            color: true,
        }
    }
}

/// The latest report of one component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    /// Its id.
    pub id: ComponentId,
    /// When its last report arrived.
    pub last_report: Instant,
    /// A report with a flag (final) arrived: purged at the next purge.
    pub finished: bool,
    /// Its report interval, µs.
    pub report_interval_us: u32,
    /// Its sender time stamp, µs (its uptime for RSPLIB 3.5.10 senders).
    pub sender_timestamp_us: u64,
    /// Location text (control characters replaced).
    pub location: String,
    /// Status text (control characters replaced).
    pub status: String,
    /// Workload.
    pub workload: Workload,
    /// Its associations.
    pub associations: Vec<CspAssociation>,
}

/// Components by sender id.
#[derive(Clone, Debug, Default)]
pub struct CspTable {
    components: HashMap<ComponentId, Component>,
    /// Datagrams that were not valid reports.
    pub rejected: u64,
}

/// Lossy UTF-8 with control characters shown as `?`.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `PR $xxxxxxxx`, `PE $xxxxxxxx`, `PU $xxxxxxxxxxxxxx`, `ID $…` (RSPLIB's descriptions).
pub fn describe_id(id: ComponentId) -> String {
    match id.group() {
        ComponentGroup::Registrar => format!("PR ${:08x}", id.object()),
        ComponentGroup::PoolElement => format!("PE ${:08x}", id.object()),
        ComponentGroup::PoolUser => format!("PU ${:014x}", id.object()),
        ComponentGroup::Other(_) => format!("ID ${:>14x}", id.object()),
    }
}

/// `ASAP/SCTP`, `Data/TCP`, `$0000002a/$0011` … (PPID name / protocol name).
pub fn describe_protocol(protocol: CspProtocol, ppid: u32) -> String {
    let p = match ppid_name(ppid) {
        Some(n) => n.to_owned(),
        None => format!("${ppid:08x}"),
    };
    let q = match protocol {
        CspProtocol::Sctp => "SCTP".to_owned(),
        CspProtocol::Tcp => "TCP".to_owned(),
        CspProtocol::Udp => "UDP".to_owned(),
        CspProtocol::Other(v) => format!("${v:04x}"),
    };
    format!("{p}/{q}")
}

/// `hh:mm:ss` below 100 hours, else `ddd` days and hours, `??:??:??` beyond 15,000 days.
pub fn uptime_text(us: u64) -> String {
    let h = us / 3_600_000_000;
    if h < 100 {
        format!(
            "{h:02}:{:02}:{:02}",
            (us / 60_000_000) % 60,
            (us / 1_000_000) % 60
        )
    } else if h / 24 < 15_000 {
        format!("{:3}d {:02}h", h / 24, h % 24)
    } else {
        "??:??:??".to_owned()
    }
}

/// RSPLIB's time stamp `dd-Mon-yyyy hh:mm:ss.ffff: ` (here in UTC).
pub fn timestamp_text(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let name = usize::try_from(month - 1)
        .ok()
        .and_then(|i| MONTHS.get(i))
        .copied()
        .unwrap_or("???");
    format!(
        "{day:02}-{name}-{year:04} {:02}:{:02}:{:02}.{:04}: ",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_micros() / 100
    )
}

/// The location as shown: cut to `max` characters, the last three replaced by `...`.
fn shown_location(location: &str, max: usize) -> String {
    let max = max.min(127);
    if location.chars().count() <= max {
        return location.to_owned();
    }
    let mut s: String = location.chars().take(max).collect();
    if max >= 3 {
        let keep: String = s.chars().take(max - 3).collect();
        s = keep + "...";
    }
    s
}

impl CspTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of components.
    pub fn len(&self) -> usize {
        self.components.len()
    }

    /// True when no component is known.
    pub fn is_empty(&self) -> bool {
        self.components.is_empty()
    }

    /// A component by id.
    pub fn get(&self, id: ComponentId) -> Option<&Component> {
        self.components.get(&id)
    }

    /// Registrars, pool elements and pool users known.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for id in self.components.keys() {
            match id.group() {
                ComponentGroup::Registrar => c.0 += 1,
                ComponentGroup::PoolElement => c.1 += 1,
                ComponentGroup::PoolUser => c.2 += 1,
                ComponentGroup::Other(_) => {}
            }
        }
        c
    }

    /// Decodes one datagram and takes the report in; invalid datagrams are counted in
    /// [`CspTable::rejected`] and returned as errors.
    pub fn handle_datagram(&mut self, now: Instant, data: &[u8]) -> Result<ComponentId, CspError> {
        match CspReport::decode(data) {
            Ok(r) => {
                let id = r.sender_id;
                self.handle_report(now, r);
                Ok(id)
            }
            Err(e) => {
                self.rejected += 1;
                Err(e)
            }
        }
    }

    /// Takes one report in.
    pub fn handle_report(&mut self, now: Instant, r: CspReport) {
        if r.flags != 0 {
            // Final report: the component goes at the next purge (RSPLIB sets its last report
            // time to 0). One never seen before is not added.
            if let Some(c) = self.components.get_mut(&r.sender_id) {
                c.finished = true;
                c.associations = r.associations;
            }
            return;
        }
        let c = Component {
            id: r.sender_id,
            last_report: now,
            finished: false,
            report_interval_us: r.report_interval_us,
            sender_timestamp_us: r.sender_timestamp_us,
            location: printable(r.location.as_bytes()),
            status: printable(r.status.as_bytes()),
            workload: r.workload,
            associations: r.associations,
        };
        self.components.insert(r.sender_id, c);
    }

    /// Forgets finished components and those silent for longer than
    /// `min(purge_interval, 10 × report interval)`. Returns how many went.
    pub fn purge(&mut self, now: Instant, purge_interval: Duration) -> usize {
        let before = self.components.len();
        self.components.retain(|_, c| {
            let limit = purge_interval
                .min(Duration::from_micros(u64::from(c.report_interval_us)).saturating_mul(10));
            !c.finished && now.saturating_duration_since(c.last_report) <= limit
        });
        before - self.components.len()
    }

    /// The components in display order: group, location, id.
    pub fn sorted(&self) -> Vec<&Component> {
        let mut v: Vec<&Component> = self.components.values().collect();
        v.sort_by(|a, b| {
            (a.id.group().to_u8(), a.location.as_bytes(), a.id).cmp(&(
                b.id.group().to_u8(),
                b.location.as_bytes(),
                b.id,
            ))
        });
        v
    }

    /// One screen. `clock` is the header's time stamp ([`timestamp_text`]).
    pub fn render(&self, now: Instant, clock: &str, view: &MonitorView) -> String {
        let esc = |s: &mut String, code: &str| {
            if view.color {
                s.push_str(code);
            }
        };
        let (prs, pes, pus) = self.counts();
        let mut s = String::new();
        esc(&mut s, "\x1b[;H");
        s.push_str(clock);
        s.push_str("Current Component Status -- ");
        esc(&mut s, "\x1b[31;1m");
        let _ = write!(s, "{prs} PRs");
        esc(&mut s, "\x1b[0m");
        s.push_str(", ");
        esc(&mut s, "\x1b[34;1m");
        let _ = write!(s, "{pes} PEs");
        esc(&mut s, "\x1b[0m");
        s.push_str(", ");
        esc(&mut s, "\x1b[32;1m");
        let _ = write!(s, "{pus} PUs");
        esc(&mut s, "\x1b[0m\x1b[0K");
        s.push('\n');
        esc(&mut s, "\x1b[0K");

        // Which components are shown, and the label width.
        struct Row<'a> {
            c: &'a Component,
            label: String,
            color: u8,
        }
        let mut rows: Vec<Result<Row<'_>, (u8, usize, &'static str)>> = Vec::new();
        let mut shown = [0u32; 3];
        for c in self.sorted() {
            let (slot, max, color, name) = match c.id.group() {
                ComponentGroup::Registrar => (Some(0), view.max_pr, 31, "PRs"),
                ComponentGroup::PoolElement => (Some(1), view.max_pe, 34, "PEs"),
                ComponentGroup::PoolUser => (Some(2), view.max_pu, 32, "PUs"),
                ComponentGroup::Other(_) => (None, u32::MAX, 0, ""),
            };
            if let Some(i) = slot {
                shown[i] += 1;
                if shown[i] > max {
                    if shown[i] == max + 1 {
                        let total = [prs, pes, pus][i];
                        rows.push(Err((color, total - max as usize, name)));
                    }
                    continue;
                }
            }
            let label = format!(
                "{} [{}]",
                describe_id(c.id),
                shown_location(&c.location, view.max_location_size as usize)
            );
            rows.push(Ok(Row { c, label, color }));
        }
        let width = rows
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| r.label.chars().count())
            .max()
            .unwrap_or(0);

        for row in &rows {
            s.push('\n');
            match row {
                Err((color, n, name)) => {
                    esc(&mut s, &format!("\x1b[{color};47m"));
                    let _ = write!(s, "({n} further {name} have been hidden)");
                    esc(&mut s, "\x1b[0m");
                }
                Ok(Row { c, label, color }) => {
                    esc(&mut s, &format!("\x1b[{color};1m"));
                    s.push_str(label);
                    esc(&mut s, &format!("\x1b[0m\x1b[{color}m"));
                    s.push(' ');
                    for _ in label.chars().count()..width {
                        s.push(' ');
                    }
                    let age =
                        now.saturating_duration_since(c.last_report).as_millis() as f64 / 1000.0;
                    let _ = write!(
                        s,
                        "U={} l={age:.1}s A={}",
                        uptime_text(c.sender_timestamp_us),
                        c.associations.len()
                    );
                    if let Some(w) = c.workload.fraction() {
                        let pct = (100.0 * w).round() as u32;
                        s.push_str(" L=");
                        if w >= 0.90 {
                            esc(&mut s, "\x1b[7m");
                            let _ = write!(s, "{pct:3}%");
                            esc(&mut s, "\x1b[27m");
                        } else {
                            let _ = write!(s, "{pct:3}%");
                        }
                    }
                    let _ = write!(s, " \"{}\"", c.status);
                    esc(&mut s, "\x1b[0K");
                    if view.full {
                        for a in &c.associations {
                            let _ = write!(
                                s,
                                "\n   -> {} {}",
                                describe_id(a.receiver_id),
                                describe_protocol(a.protocol, a.ppid)
                            );
                            if let Some(d) = a.duration() {
                                let _ = write!(
                                    s,
                                    "  duration={}:{:02}:{:02}",
                                    d / 3_600_000_000,
                                    (d / 60_000_000) % 60,
                                    (d / 1_000_000) % 60
                                );
                            }
                            esc(&mut s, "\x1b[0K");
                        }
                    }
                    esc(&mut s, "\x1b[0m\x1b[0K");
                }
            }
        }
        s.push('\n');
        esc(&mut s, "\x1b[0J");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rserpool_proto::csp::{Location, StatusText, registrar_status_text};
    use rserpool_proto::ids::{PeIdentifier, ServerId};

    fn report(id: ComponentId, loc: &str, status: &str) -> CspReport {
        CspReport::new(
            id,
            3_723_000_000,
            1_000_000,
            Location::from(loc),
            StatusText::from(status),
        )
    }

    fn plain() -> MonitorView {
        MonitorView {
            color: false,
            ..MonitorView::default()
        }
    }

    #[test]
    fn texts() {
        assert_eq!(uptime_text(3_723_000_000), "01:02:03");
        assert_eq!(uptime_text(100 * 3_600_000_000), "  4d 04h");
        assert_eq!(uptime_text(u64::MAX / 2), "??:??:??");
        assert_eq!(
            describe_id(ComponentId::pool_user(0x38d44b2330c0d74)),
            "PU $8d44b2330c0d74"
        );
        assert_eq!(describe_protocol(CspProtocol::Sctp, 11), "ASAP/SCTP");
        assert_eq!(
            describe_protocol(CspProtocol::Other(7), 99),
            "$00000063/$0007"
        );
        assert_eq!(
            timestamp_text(UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456)),
            "14-Nov-2023 22:13:20.1234: "
        );
        assert_eq!(
            timestamp_text(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "29-Feb-2000 00:00:00.0000: "
        );
        assert_eq!(shown_location("abcdefgh", 5), "ab...");
        assert_eq!(shown_location("abc", 5), "abc");
    }

    #[test]
    fn screen_layout_compact_and_full() {
        let mut t = CspTable::new();
        let now = Instant::from_millis(10_000);
        let pr = ComponentId::registrar(ServerId(0x802547ba));
        let mut r = report(pr, "host: 10.0.0.1:3863", "");
        r.status = registrar_status_text(1, 1, 1, 0);
        r.associations.push(CspAssociation {
            receiver_id: ComponentId::registrar(ServerId(0)),
            duration_us: u64::MAX,
            flags: 0,
            protocol: CspProtocol::Sctp,
            ppid: 12,
        });
        t.handle_datagram(now, &r.to_bytes().unwrap()).unwrap();
        let pe = ComponentId::pool_element(PeIdentifier(0x2bc6ac57));
        let mut r = report(pe, "host: 10.0.0.4:5000", "1 Session");
        r.workload = Workload::from_fraction(0.5);
        r.associations.push(CspAssociation {
            receiver_id: pr,
            duration_us: 61_000_000,
            flags: 0,
            protocol: CspProtocol::Tcp,
            ppid: 11,
        });
        t.handle_datagram(now + Duration::from_millis(500), &r.to_bytes().unwrap())
            .unwrap();
        assert!(t.handle_datagram(now, &[1, 2, 3]).is_err());
        assert_eq!(t.rejected, 1);
        assert_eq!(t.counts(), (1, 1, 0));

        let later = now + Duration::from_millis(1500);
        let screen = t.render(later, "T: ", &plain());
        assert_eq!(
            screen,
            "T: Current Component Status -- 1 PRs, 1 PEs, 0 PUs\n\
             \n\
             PR $802547ba [host: 10.0.0.1:3863] U=01:02:03 l=1.5s A=1 \"1[1] PEs in 1 Pool, 0 Peers\"\n\
             PE $2bc6ac57 [host: 10.0.0.4:5000] U=01:02:03 l=1.0s A=1 L= 50% \"1 Session\"\n"
        );
        let full = t.render(
            later,
            "T: ",
            &MonitorView {
                full: true,
                ..plain()
            },
        );
        assert!(full.contains(
            "\"1[1] PEs in 1 Pool, 0 Peers\"\n   -> PR $00000000 ENRP/SCTP\nPE $2bc6ac57"
        ));
        assert!(full.contains("\"1 Session\"\n   -> PR $802547ba ASAP/TCP  duration=0:01:01\n"));
        let colored = t.render(later, "T: ", &MonitorView::default());
        assert!(colored.starts_with("\x1b[;HT: Current Component Status -- \x1b[31;1m1 PRs"));
        assert!(colored.contains("\x1b[34;1mPE $2bc6ac57 [host: 10.0.0.4:5000]\x1b[0m\x1b[34m U="));
        assert!(colored.ends_with("\x1b[0J"));
    }

    #[test]
    fn ordering_limits_padding_and_sanitising() {
        let mut t = CspTable::new();
        let now = Instant::from_millis(1000);
        for (id, loc) in [(3u32, "b"), (1, "b"), (2, "a"), (4, "c")] {
            t.handle_report(
                now,
                report(ComponentId::pool_element(PeIdentifier(id)), loc, "x"),
            );
        }
        t.handle_report(
            now,
            report(
                ComponentId::pool_user(9),
                "long location here",
                "evil\x1b[2Jtext",
            ),
        );
        let view = MonitorView {
            max_pe: 3,
            ..plain()
        };
        let screen = t.render(now, "", &view);
        let lines: Vec<&str> = screen.lines().collect();
        assert_eq!(lines[0], "Current Component Status -- 0 PRs, 4 PEs, 1 PUs");
        let row = |label: &str| format!("{label:<39} U=01:02:03 l=0.0s A=0 \"x\"");
        assert_eq!(lines[2], row("PE $00000002 [a]"));
        assert_eq!(lines[3], row("PE $00000001 [b]"));
        assert_eq!(lines[4], row("PE $00000003 [b]"));
        assert_eq!(lines[5], "(1 further PEs have been hidden)");
        assert_eq!(
            lines[6],
            "PU $00000000000009 [long location here] U=01:02:03 l=0.0s A=0 \"evil?[2Jtext\""
        );
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn purge_rules() {
        let mut t = CspTable::new();
        let t0 = Instant::from_millis(1000);
        let a = ComponentId::pool_element(PeIdentifier(1));
        let b = ComponentId::pool_element(PeIdentifier(2));
        let mut ra = report(a, "a", "");
        ra.report_interval_us = 100_000; // 10 × = 1 s
        t.handle_report(t0, ra);
        t.handle_report(t0, report(b, "b", ""));
        let purge = Duration::from_secs(5);
        assert_eq!(t.purge(t0 + Duration::from_millis(1000), purge), 0);
        assert_eq!(t.purge(t0 + Duration::from_millis(1001), purge), 1);
        assert!(t.get(a).is_none());
        assert_eq!(t.purge(t0 + Duration::from_millis(5000), purge), 0);
        // A final report: gone at the next purge.
        t.handle_report(t0, CspReport::final_report(b, 0, 1_000_000));
        assert_eq!(t.purge(t0, purge), 1);
        assert!(t.is_empty());
        // A final report of an unknown component adds nothing.
        t.handle_report(t0, CspReport::final_report(b, 0, 1_000_000));
        assert!(t.is_empty());
    }
}
