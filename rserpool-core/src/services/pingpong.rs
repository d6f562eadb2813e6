//! Ping Pong PE (`rspserver -pingpong`) and client (`pingpongclient`), `services.md` §3.
//!
//! The PE answers every Ping with a Pong carrying its per-session ReplyNo and then sends a
//! cookie with the *next* ReplyNo; a PE that gets that cookie echoed continues the
//! sequence, so the client sees no gap after a failover.
//!
//! Differences from RSPLIB (deliberate):
//! * the PE refuses a Ping whose Length exceeds the received bytes (RSPLIB over-reads);
//! * the client detects a hung PE: if a Ping stays unanswered for
//!   [`PingPongClientConfig::pong_timeout`] it fails over and reports the PE unreachable.
//!   RSPLIB's client only reacts to FAILOVER_NECESSARY, i.e. to SCTP noticing the failure,
//!   which for a stopped (not crashed) PE takes tens of seconds.

use bytes::Bytes;
use core::convert::Infallible;
use core::time::Duration;
use std::collections::VecDeque;

use rserpool_proto::services::pingpong::{MAX_PONG_DATA, PingPongCookie, PingPongMessage};

use super::{
    CloseMode, LogLevel, Outbox, PPID_PINGPONG, ServiceOutput, ServiceSession, SessionEvent,
    WallClock,
};
use crate::time::Instant;

/// Settings of the Ping Pong PE (`rspserver -pingpong`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingPongServerConfig {
    /// `-pppmaxthreads`: most parallel sessions (default 4; enforced by the driver).
    pub max_sessions: usize,
    /// `-pppfailureafter`: abort each session after this many Pongs (0 = never; default 0).
    pub failure_after: u64,
}

impl Default for PingPongServerConfig {
    fn default() -> Self {
        PingPongServerConfig {
            max_sessions: 4,
            failure_after: 0,
        }
    }
}

/// One Ping Pong PE session.
#[derive(Debug)]
pub struct PingPongServer {
    config: PingPongServerConfig,
    reply_no: u64,
    replies: u64,
    seen_data: bool,
    seen_cookie: bool,
    finished: bool,
    out: Outbox<Infallible>,
}

impl PingPongServer {
    /// A new session: ReplyNo 1, no replies yet.
    pub fn new(config: PingPongServerConfig) -> PingPongServer {
        PingPongServer {
            config,
            reply_no: 1,
            replies: 0,
            seen_data: false,
            seen_cookie: false,
            finished: false,
            out: Outbox::default(),
        }
    }

    /// The ReplyNo the next Pong will carry.
    pub fn next_reply_no(&self) -> u64 {
        self.reply_no
    }

    /// Pongs sent in this session.
    pub fn replies(&self) -> u64 {
        self.replies
    }

    fn abort(&mut self, why: String) {
        self.out.log(LogLevel::Warning, why);
        self.out.push(ServiceOutput::Close(CloseMode::Abort));
        self.finished = true;
    }
}

impl ServiceSession for PingPongServer {
    type Event = Infallible;

    fn handle_data(&mut self, _now: Instant, _ppid: u32, _stream: u16, data: Bytes) {
        if self.finished {
            return;
        }
        self.seen_data = true;
        match PingPongMessage::decode_bytes(&data) {
            Ok(PingPongMessage::Ping { message_no, data }) if data.len() <= MAX_PONG_DATA => {
                let pong = PingPongMessage::Pong {
                    message_no,
                    reply_no: self.reply_no,
                    data,
                };
                self.out.send(PPID_PINGPONG, pong.encode());
                self.reply_no = self.reply_no.wrapping_add(1);
                self.replies += 1;
                self.out.push(ServiceOutput::SendCookie(
                    PingPongCookie {
                        reply_no: self.reply_no,
                    }
                    .encode(),
                ));
                if self.config.failure_after > 0 && self.replies >= self.config.failure_after {
                    self.abort(format!(
                        "PingPong: failure tester, aborting after {} replies",
                        self.replies
                    ));
                }
            }
            Ok(PingPongMessage::Ping { data, .. }) => {
                self.abort(format!(
                    "PingPong: Ping data of {} bytes does not fit a Pong",
                    data.len()
                ));
            }
            Ok(PingPongMessage::Pong { .. }) => {
                self.abort("PingPong: unexpected Pong from the PU".into());
            }
            Err(e) => self.abort(format!("PingPong: bad message: {e}")),
        }
    }

    fn handle_cookie_echo(&mut self, _now: Instant, cookie: Bytes) {
        if self.finished {
            return;
        }
        if self.seen_data {
            self.abort("PingPong: dropped unexpected ASAP COOKIE_ECHO".into());
            return;
        }
        if self.seen_cookie {
            self.out.log(
                LogLevel::Warning,
                "PingPong: got additional cookie echo, ignoring it",
            );
            return;
        }
        self.seen_cookie = true;
        match PingPongCookie::decode(&cookie) {
            Ok(c) => {
                self.reply_no = c.reply_no;
                self.out.log(
                    LogLevel::Info,
                    format!(
                        "PingPong: restored from cookie, next ReplyNo {}",
                        c.reply_no
                    ),
                );
            }
            Err(e) => self.abort(format!("PingPong: bad cookie: {e}")),
        }
    }

    fn handle_event(&mut self, _now: Instant, event: SessionEvent) {
        if self.finished {
            return;
        }
        match event {
            SessionEvent::SendFailed => self.abort("PingPong: send failed".into()),
            SessionEvent::PeerClosed => self.finished = true,
            SessionEvent::ServerShutdown => {
                self.out.push(ServiceOutput::Close(CloseMode::Shutdown));
                self.finished = true;
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_output(&mut self) -> Option<ServiceOutput<Infallible>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}

/// Settings of `pingpongclient`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingPongClientConfig {
    /// `-interval`: time between Pings (default 500 ms).
    pub interval: Duration,
    /// Fail over (reporting the PE unreachable) when a Ping stays unanswered this long;
    /// `None` behaves like RSPLIB (never). Default 5 s. Not an RSPLIB option.
    pub pong_timeout: Option<Duration>,
    /// Wall clock for the "Zeitstempel" in the Ping text.
    pub clock: WallClock,
}

impl Default for PingPongClientConfig {
    fn default() -> Self {
        PingPongClientConfig {
            interval: Duration::from_millis(500),
            pong_timeout: Some(Duration::from_secs(5)),
            clock: WallClock::default(),
        }
    }
}

/// What `pingpongclient` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PingPongEvent {
    /// A Pong arrived (`Ack #MessageNo from PE … (reply #ReplyNo)`).
    Pong {
        /// Its MessageNo.
        message_no: u64,
        /// Its ReplyNo.
        reply_no: u64,
        /// `ReplyNo − lastReplyNo` when that is not 1 (`*** Detected gap of N! ***`).
        gap: Option<i128>,
    },
    /// The client gave up on the PE (Pong timeout, send failure, FAILOVER_NECESSARY) and
    /// asked for a failover.
    FailoverStarted {
        /// Whether the PE is reported unreachable.
        report_unreachable: bool,
    },
    /// The session is on a PE again.
    FailoverCompleted {
        /// Whether the cookie was echoed (the ReplyNo sequence continues).
        cookie_echoed: bool,
    },
}

/// Counters of a `pingpongclient` run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PingPongCounters {
    /// Pings sent.
    pub pings: u64,
    /// Pongs received.
    pub pongs: u64,
    /// Pongs whose ReplyNo did not follow the previous one.
    pub gaps: u64,
    /// Failovers started.
    pub failovers: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    Connecting,
    Connected,
    FailingOver,
}

/// `pingpongclient`: one session, a Ping every interval, Pongs checked for gaps.
#[derive(Debug)]
pub struct PingPongClient {
    config: PingPongClientConfig,
    state: ClientState,
    message_no: u64,
    last_reply_no: u64,
    next_ping: Instant,
    outstanding: VecDeque<(u64, Instant)>,
    counters: PingPongCounters,
    out: Outbox<PingPongEvent>,
}

impl PingPongClient {
    /// A client whose session is being connected (feed [`SessionEvent::Up`] when
    /// `rsp_connect` is done).
    pub fn new(config: PingPongClientConfig) -> PingPongClient {
        PingPongClient {
            config,
            state: ClientState::Connecting,
            message_no: 1,
            last_reply_no: 0,
            next_ping: Instant::FAR_FUTURE,
            outstanding: VecDeque::new(),
            counters: PingPongCounters::default(),
            out: Outbox::default(),
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> PingPongCounters {
        self.counters
    }

    /// The MessageNo of the next Ping.
    pub fn next_message_no(&self) -> u64 {
        self.message_no
    }

    /// The ReplyNo of the last Pong (0 before the first).
    pub fn last_reply_no(&self) -> u64 {
        self.last_reply_no
    }

    /// The Ping payload `pingpongclient` sends.
    pub fn ping_text(message_no: u64, unix_micros: u64) -> String {
        format!("Nachricht: {message_no}, Zeitstempel: {unix_micros}")
    }

    fn start_failover(&mut self, report_unreachable: bool, why: &str) {
        self.enter_failover(report_unreachable, why);
        self.out
            .push(ServiceOutput::Failover { report_unreachable });
    }

    fn enter_failover(&mut self, report_unreachable: bool, why: &str) {
        self.state = ClientState::FailingOver;
        self.outstanding.clear();
        self.next_ping = Instant::FAR_FUTURE;
        self.counters.failovers += 1;
        self.out
            .log(LogLevel::Info, format!("PingPong: {why} -> failover"));
        self.out
            .event(PingPongEvent::FailoverStarted { report_unreachable });
    }

    fn send_ping(&mut self, now: Instant) {
        let text = Self::ping_text(self.message_no, self.config.clock.unix_micros(now));
        let ping = PingPongMessage::Ping {
            message_no: self.message_no,
            data: Bytes::from(text),
        };
        self.out.send(PPID_PINGPONG, ping.encode());
        self.outstanding.push_back((self.message_no, now));
        self.message_no = self.message_no.wrapping_add(1);
        self.counters.pings += 1;
    }
}

impl ServiceSession for PingPongClient {
    type Event = PingPongEvent;

    fn handle_data(&mut self, _now: Instant, _ppid: u32, _stream: u16, data: Bytes) {
        match PingPongMessage::decode_bytes(&data) {
            Ok(PingPongMessage::Pong {
                message_no,
                reply_no,
                ..
            }) => {
                let diff = i128::from(reply_no) - i128::from(self.last_reply_no);
                let gap = (diff != 1).then_some(diff);
                if gap.is_some() {
                    self.counters.gaps += 1;
                }
                self.last_reply_no = reply_no;
                self.counters.pongs += 1;
                while self
                    .outstanding
                    .front()
                    .is_some_and(|&(n, _)| n <= message_no)
                {
                    self.outstanding.pop_front();
                }
                self.out.event(PingPongEvent::Pong {
                    message_no,
                    reply_no,
                    gap,
                });
            }
            Ok(PingPongMessage::Ping { .. }) => {
                self.out
                    .log(LogLevel::Warning, "PingPong: ignoring a Ping from the PE");
            }
            Err(e) => self
                .out
                .log(LogLevel::Warning, format!("PingPong: bad message: {e}")),
        }
    }

    fn handle_cookie_echo(&mut self, _now: Instant, _cookie: Bytes) {}

    fn handle_event(&mut self, now: Instant, event: SessionEvent) {
        match (event, self.state) {
            (SessionEvent::Up, _) => {
                self.state = ClientState::Connected;
                self.next_ping = now;
            }
            (SessionEvent::FailoverComplete { cookie_echoed }, _) => {
                self.state = ClientState::Connected;
                self.next_ping = now;
                self.out
                    .event(PingPongEvent::FailoverCompleted { cookie_echoed });
            }
            (SessionEvent::FailoverNecessary, ClientState::FailingOver) => {
                // The previous failover reached no PE: try again.
                self.out.push(ServiceOutput::Failover {
                    report_unreachable: false,
                });
            }
            (SessionEvent::FailoverNecessary, _) => {
                self.start_failover(false, "failover necessary");
            }
            (SessionEvent::FailoverStarted, ClientState::Connected) => {
                self.enter_failover(false, "session layer fails over");
            }
            (SessionEvent::SendFailed, ClientState::Connected) => {
                // The Ping was not sent: its number is used again.
                if let Some((n, _)) = self.outstanding.pop_back() {
                    self.message_no = n;
                    self.counters.pings = self.counters.pings.saturating_sub(1);
                }
                self.start_failover(false, "send failed");
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.state != ClientState::Connected {
            return;
        }
        if let (Some(timeout), Some(&(n, sent))) =
            (self.config.pong_timeout, self.outstanding.front())
            && now >= sent + timeout
        {
            self.start_failover(true, &format!("no Pong for Ping #{n}"));
            return;
        }
        if now >= self.next_ping {
            self.send_ping(now);
            self.next_ping += self.config.interval;
            if self.next_ping <= now {
                self.next_ping = now + self.config.interval;
            }
        }
    }

    fn poll_output(&mut self) -> Option<ServiceOutput<PingPongEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.state != ClientState::Connected {
            return None;
        }
        let mut t = self.next_ping;
        if let (Some(timeout), Some(&(_, sent))) =
            (self.config.pong_timeout, self.outstanding.front())
        {
            t = t.min(sent + timeout);
        }
        Some(t)
    }

    fn is_finished(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain<S: ServiceSession>(s: &mut S) -> Vec<ServiceOutput<S::Event>> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    fn sends<E>(outs: &[ServiceOutput<E>]) -> Vec<Bytes> {
        outs.iter()
            .filter_map(|o| match o {
                ServiceOutput::Send { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect()
    }

    fn ping(n: u64, text: &'static [u8]) -> Bytes {
        PingPongMessage::Ping {
            message_no: n,
            data: Bytes::from_static(text),
        }
        .encode()
    }

    #[test]
    fn server_pong_and_cookie() {
        let mut s = PingPongServer::new(PingPongServerConfig::default());
        let t = Instant::ZERO;
        s.handle_event(t, SessionEvent::Up);
        s.handle_data(t, 33, 0, ping(1, b"hi"));
        let outs = drain(&mut s);
        assert_eq!(
            outs,
            vec![
                ServiceOutput::Send {
                    ppid: 33,
                    stream: 0,
                    data: PingPongMessage::Pong {
                        message_no: 1,
                        reply_no: 1,
                        data: Bytes::from_static(b"hi")
                    }
                    .encode()
                },
                ServiceOutput::SendCookie(PingPongCookie { reply_no: 2 }.encode()),
            ]
        );
        // A second Ping continues the counter regardless of its MessageNo.
        s.handle_data(t, 33, 0, ping(17, b""));
        let outs = drain(&mut s);
        assert_eq!(
            PingPongMessage::decode_bytes(&sends(&outs)[0]).unwrap(),
            PingPongMessage::Pong {
                message_no: 17,
                reply_no: 2,
                data: Bytes::new()
            }
        );
        assert_eq!(s.replies(), 2);
    }

    #[test]
    fn server_resumes_from_cookie() {
        // [CAP 03]: PE 12 gets cookie ReplyNo 13 and answers Ping 13 with ReplyNo 13.
        let mut s = PingPongServer::new(PingPongServerConfig::default());
        let t = Instant::ZERO;
        s.handle_cookie_echo(t, PingPongCookie { reply_no: 13 }.encode());
        s.handle_data(t, 33, 0, ping(13, b"x"));
        let outs = drain(&mut s);
        let pong = sends(&outs);
        assert_eq!(
            PingPongMessage::decode_bytes(&pong[0]).unwrap(),
            PingPongMessage::Pong {
                message_no: 13,
                reply_no: 13,
                data: Bytes::from_static(b"x")
            }
        );
        assert!(outs.contains(&ServiceOutput::SendCookie(
            PingPongCookie { reply_no: 14 }.encode()
        )));
    }

    #[test]
    fn server_aborts_on_bad_input() {
        let t = Instant::ZERO;
        // Cookie echo after data.
        let mut s = PingPongServer::new(PingPongServerConfig::default());
        s.handle_data(t, 33, 0, ping(1, b""));
        s.handle_cookie_echo(t, PingPongCookie { reply_no: 5 }.encode());
        assert_eq!(
            drain(&mut s).last(),
            Some(&ServiceOutput::Close(CloseMode::Abort))
        );
        assert!(s.is_finished());
        // Malformed cookie.
        let mut s = PingPongServer::new(PingPongServerConfig::default());
        s.handle_cookie_echo(t, Bytes::from_static(b"<PP-TD2>\0\0\0\0\0\0\0\x01"));
        assert_eq!(
            drain(&mut s).last(),
            Some(&ServiceOutput::Close(CloseMode::Abort))
        );
        // Truncated Ping (Length beyond data), non-Ping, garbage.
        for bad in [
            Bytes::from_static(&[1, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0, 1]),
            PingPongMessage::Pong {
                message_no: 1,
                reply_no: 1,
                data: Bytes::new(),
            }
            .encode(),
            Bytes::from_static(&[1, 0]),
        ] {
            let mut s = PingPongServer::new(PingPongServerConfig::default());
            s.handle_data(t, 33, 0, bad);
            let outs = drain(&mut s);
            assert!(sends(&outs).is_empty());
            assert_eq!(outs.last(), Some(&ServiceOutput::Close(CloseMode::Abort)));
        }
    }

    #[test]
    fn server_failure_after() {
        let mut s = PingPongServer::new(PingPongServerConfig {
            failure_after: 2,
            ..Default::default()
        });
        let t = Instant::ZERO;
        s.handle_data(t, 33, 0, ping(1, b""));
        assert!(!drain(&mut s).contains(&ServiceOutput::Close(CloseMode::Abort)));
        s.handle_data(t, 33, 0, ping(2, b""));
        let outs = drain(&mut s);
        // Pong and cookie go out before the abort.
        assert!(matches!(outs[0], ServiceOutput::Send { .. }));
        assert!(matches!(outs[1], ServiceOutput::SendCookie(_)));
        assert_eq!(outs.last(), Some(&ServiceOutput::Close(CloseMode::Abort)));
        s.handle_data(t, 33, 0, ping(3, b""));
        assert!(drain(&mut s).is_empty());
    }

    /// Runs a client against PEs in memory: cookies are kept like the session layer keeps
    /// them and echoed to the next PE.
    #[test]
    fn client_failover_keeps_reply_sequence() {
        let config = PingPongClientConfig {
            clock: WallClock {
                unix_micros_at_zero: 1_795_486_626_000_000,
                utc_offset_secs: 0,
            },
            ..Default::default()
        };
        let mut c = PingPongClient::new(config);
        let mut pe = PingPongServer::new(PingPongServerConfig::default());
        let mut cookie: Option<Bytes> = None;
        let mut events = Vec::new();
        let mut now = Instant::ZERO;
        c.handle_event(now, SessionEvent::Up);
        let mut pe_alive = true;
        for step in 0..40u64 {
            if step == 12 {
                pe_alive = false; // PE frozen: Pings vanish.
            }
            if let Some(t) = c.poll_timeout() {
                now = now.max(t);
            }
            c.handle_timeout(now);
            for o in drain(&mut c) {
                match o {
                    ServiceOutput::Send { data, .. } if pe_alive => {
                        pe.handle_data(now, 33, 0, data);
                        for p in drain(&mut pe) {
                            match p {
                                ServiceOutput::Send { data, .. } => c.handle_data(now, 33, 0, data),
                                ServiceOutput::SendCookie(k) => cookie = Some(k),
                                _ => {}
                            }
                        }
                    }
                    ServiceOutput::Failover { report_unreachable } => {
                        assert!(report_unreachable, "hung PE is reported");
                        pe = PingPongServer::new(PingPongServerConfig::default());
                        pe_alive = true;
                        if let Some(k) = &cookie {
                            pe.handle_cookie_echo(now, k.clone());
                        }
                        c.handle_event(
                            now,
                            SessionEvent::FailoverComplete {
                                cookie_echoed: cookie.is_some(),
                            },
                        );
                    }
                    ServiceOutput::Event(e) => events.push(e),
                    _ => {}
                }
            }
        }
        let pongs: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                PingPongEvent::Pong { reply_no, gap, .. } => Some((*reply_no, *gap)),
                _ => None,
            })
            .collect();
        assert!(pongs.len() > 20);
        assert!(pongs.iter().all(|(_, g)| g.is_none()), "{pongs:?}");
        assert_eq!(
            pongs.iter().map(|p| p.0).collect::<Vec<_>>(),
            (1..=pongs.len() as u64).collect::<Vec<_>>()
        );
        assert_eq!(c.counters().failovers, 1);
        assert_eq!(c.counters().gaps, 0);
        assert!(events.contains(&PingPongEvent::FailoverCompleted {
            cookie_echoed: true
        }));
        // Pings lost with the frozen PE were not answered; the numbers went on.
        assert!(c.next_message_no() > c.last_reply_no());
    }

    #[test]
    fn client_ping_format_and_interval() {
        let config = PingPongClientConfig {
            clock: WallClock {
                unix_micros_at_zero: 1_795_486_626_863_199,
                utc_offset_secs: 0,
            },
            pong_timeout: None,
            ..Default::default()
        };
        let mut c = PingPongClient::new(config);
        assert_eq!(c.poll_timeout(), None, "nothing before the session is up");
        c.handle_event(Instant::ZERO, SessionEvent::Up);
        assert_eq!(c.poll_timeout(), Some(Instant::ZERO));
        c.handle_timeout(Instant::ZERO);
        let outs = drain(&mut c);
        // Byte-exact with [CAP 03] frame 33.
        assert_eq!(
            sends(&outs)[0],
            PingPongMessage::Ping {
                message_no: 1,
                data: Bytes::from_static(b"Nachricht: 1, Zeitstempel: 1795486626863199")
            }
            .encode()
        );
        assert_eq!(c.poll_timeout(), Some(Instant::from_millis(500)));
        // Without a pong timeout a silent PE is never left (RSPLIB behaviour).
        for ms in (500..10_000).step_by(500) {
            c.handle_timeout(Instant::from_millis(ms));
        }
        assert!(
            !drain(&mut c)
                .iter()
                .any(|o| matches!(o, ServiceOutput::Failover { .. }))
        );
        assert_eq!(c.counters().pings, 20);
    }

    #[test]
    fn client_gap_and_failover_necessary() {
        let mut c = PingPongClient::new(PingPongClientConfig::default());
        let t = Instant::ZERO;
        c.handle_event(t, SessionEvent::Up);
        c.handle_timeout(t);
        drain(&mut c);
        let pong = |m, r| {
            PingPongMessage::Pong {
                message_no: m,
                reply_no: r,
                data: Bytes::new(),
            }
            .encode()
        };
        c.handle_data(t, 33, 0, pong(1, 1));
        c.handle_data(t, 33, 0, pong(2, 5));
        c.handle_data(t, 33, 0, Bytes::from_static(b"\x02\x00"));
        let outs = drain(&mut c);
        assert!(outs.contains(&ServiceOutput::Event(PingPongEvent::Pong {
            message_no: 2,
            reply_no: 5,
            gap: Some(4)
        })));
        assert!(outs.iter().any(|o| matches!(
            o,
            ServiceOutput::Log {
                level: LogLevel::Warning,
                ..
            }
        )));
        c.handle_event(t, SessionEvent::FailoverNecessary);
        assert!(drain(&mut c).contains(&ServiceOutput::Failover {
            report_unreachable: false
        }));
        assert_eq!(c.poll_timeout(), None);
        // The failover reached no PE: the client asks again.
        c.handle_event(t, SessionEvent::FailoverNecessary);
        assert_eq!(
            drain(&mut c),
            vec![ServiceOutput::Failover {
                report_unreachable: false
            }]
        );
        assert_eq!(c.counters().failovers, 1);
    }

    #[test]
    fn client_send_failure_reuses_number() {
        let mut c = PingPongClient::new(PingPongClientConfig::default());
        let t = Instant::ZERO;
        c.handle_event(t, SessionEvent::Up);
        c.handle_timeout(t);
        drain(&mut c);
        assert_eq!(c.next_message_no(), 2);
        c.handle_event(t, SessionEvent::SendFailed);
        assert_eq!(c.next_message_no(), 1);
        assert!(drain(&mut c).contains(&ServiceOutput::Failover {
            report_unreachable: false
        }));
    }

    #[test]
    fn client_follows_automatic_failover() {
        let mut c = PingPongClient::new(PingPongClientConfig::default());
        let t = Instant::ZERO;
        c.handle_event(t, SessionEvent::Up);
        c.handle_timeout(t);
        drain(&mut c);
        c.handle_event(t, SessionEvent::FailoverStarted);
        let outs = drain(&mut c);
        assert!(
            !outs
                .iter()
                .any(|o| matches!(o, ServiceOutput::Failover { .. }))
        );
        assert_eq!(
            c.poll_timeout(),
            None,
            "no Pings while the session layer fails over"
        );
        let later = Instant::from_millis(700);
        c.handle_event(
            later,
            SessionEvent::FailoverComplete {
                cookie_echoed: true,
            },
        );
        assert_eq!(c.poll_timeout(), Some(later));
        c.handle_timeout(later);
        assert_eq!(sends(&drain(&mut c)).len(), 1);
        assert_eq!(c.counters().failovers, 1);
    }
}
