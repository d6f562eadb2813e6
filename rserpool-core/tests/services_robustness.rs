//! Robustness of the service machines: arbitrary sequences of inputs (well-formed and
//! malformed messages, cookies, session events, timer expiries) never panic, every machine
//! stays quiet once it has finished, and timers never go backwards.

use bytes::Bytes;
use core::time::Duration;
use proptest::prelude::*;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use rserpool_core::Instant;
use rserpool_core::services::calcapp::{
    CalcAppClient, CalcAppClientConfig, CalcAppServer, CalcAppServerConfig, CalcAppServerOutput,
};
use rserpool_core::services::fractal::{FractalClient, FractalServer, FractalServerConfig};
use rserpool_core::services::pingpong::{
    PingPongClient, PingPongClientConfig, PingPongServer, PingPongServerConfig,
};
use rserpool_core::services::scripting::{
    EnvironmentHash, HostError, NoKeyring, ScriptingClient, ScriptingClientConfig, ScriptingHost,
    ScriptingRejectSession, ScriptingServer, ScriptingServerConfig,
};
use rserpool_core::services::simple::{
    CharGenConfig, CharGenServer, DaytimeServer, DiscardServer, EchoServer,
};
use rserpool_core::services::{ServiceOutput, ServiceSession, SessionEvent, WallClock};
use rserpool_proto::services::calcapp::{CalcAppCookie, CalcAppMessage, CalcAppType};
use rserpool_proto::services::fractal::{FgpCookie, FgpData, FgpParameter, FractalAlgorithm};
use rserpool_proto::services::pingpong::{PingPongCookie, PingPongMessage};
use rserpool_proto::services::scripting::{NotReadyReason, ScriptingMessage};

#[derive(Clone, Debug)]
enum Op {
    Data(Bytes),
    Cookie(Bytes),
    Event(SessionEvent),
    Advance(u64),
}

fn event() -> impl Strategy<Value = SessionEvent> {
    prop_oneof![
        Just(SessionEvent::Up),
        Just(SessionEvent::Blocked),
        Just(SessionEvent::Writable),
        Just(SessionEvent::SendFailed),
        Just(SessionEvent::PeerClosed),
        Just(SessionEvent::FailoverNecessary),
        Just(SessionEvent::FailoverStarted),
        any::<bool>().prop_map(|cookie_echoed| SessionEvent::FailoverComplete { cookie_echoed }),
        Just(SessionEvent::ServerShutdown),
    ]
}

fn raw() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..80).prop_map(Bytes::from)
}

fn small_param() -> impl Strategy<Value = FgpParameter> {
    (
        0u32..40,
        0u32..40,
        0u32..50,
        0u32..4,
        -2.0f64..2.0,
        -2.0f64..2.0,
        1.0f64..4.0,
    )
        .prop_map(|(w, h, it, a, c1, c2, n)| FgpParameter {
            width: w,
            height: h,
            max_iterations: it,
            algorithm: FractalAlgorithm::from_code(a),
            c1_real: c1,
            c1_imag: c2,
            c2_real: c2,
            c2_imag: c1,
            n,
        })
}

fn pingpong_msg() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        (any::<u64>(), raw()).prop_map(|(message_no, data)| PingPongMessage::Ping {
            message_no,
            data
        }
        .encode()),
        (any::<u64>(), any::<u64>(), raw()).prop_map(|(message_no, reply_no, data)| {
            PingPongMessage::Pong {
                message_no,
                reply_no,
                data,
            }
            .encode()
        }),
        raw(),
    ]
}

fn calcapp_msg() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        (1u8..=7, 0u32..3, 0u64..5_000_000, 0u64..5_000_000).prop_map(|(t, job_id, s, c)| {
            CalcAppMessage {
                ty: CalcAppType::from_code(t).unwrap(),
                job_id,
                job_size: s,
                completed: c,
            }
            .encode()
        }),
        raw(),
    ]
}

fn fgp_msg() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        small_param().prop_map(|p| p.encode()),
        (
            0u32..45,
            0u32..45,
            proptest::collection::vec(any::<u32>(), 0..400)
        )
            .prop_map(|(start_x, start_y, points)| FgpData {
                start_x,
                start_y,
                points
            }
            .encode()),
        Just(FgpData::end_marker().encode()),
        raw(),
    ]
}

fn ssp_msg() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        (any::<u32>(), raw()).prop_map(|(r, info)| ScriptingMessage::NotReady {
            reason: NotReadyReason::from_code(r),
            info
        }
        .encode()),
        raw().prop_map(|info| ScriptingMessage::Ready { info }.encode()),
        raw().prop_map(|d| ScriptingMessage::Upload(d).encode()),
        Just(ScriptingMessage::Upload(Bytes::new()).encode()),
        raw().prop_map(|d| ScriptingMessage::Download(d).encode()),
        Just(ScriptingMessage::Download(Bytes::new()).encode()),
        Just(ScriptingMessage::KeepAlive.encode()),
        proptest::option::of(any::<u32>())
            .prop_map(|status| ScriptingMessage::KeepAliveAck { status }.encode()),
        (0u32..3).prop_map(|s| ScriptingMessage::Status(s).encode()),
        (any::<[u8; 20]>(), any::<bool>()).prop_map(|(hash, upload_needed)| {
            ScriptingMessage::Environment {
                hash,
                upload_needed,
            }
            .encode()
        }),
        raw(),
    ]
}

fn cookie() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        any::<u64>().prop_map(|reply_no| PingPongCookie { reply_no }.encode()),
        (0u32..3, 0u64..5_000_000, 0u64..5_000_000).prop_map(|(job_id, job_size, completed)| {
            CalcAppCookie {
                job_id,
                job_size,
                completed,
            }
            .encode()
        }),
        (small_param(), 0u32..50, 0u32..50).prop_map(|(parameter, current_x, current_y)| {
            FgpCookie {
                parameter,
                current_x,
                current_y,
            }
            .encode()
        }),
        raw(),
    ]
}

fn ops(msg: BoxedStrategy<Bytes>) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            4 => msg.prop_map(Op::Data),
            1 => cookie().prop_map(Op::Cookie),
            2 => event().prop_map(Op::Event),
            3 => (0u64..20_000).prop_map(Op::Advance),
        ],
        0..60,
    )
}

/// Drives `m` with `ops`; checks the invariants.
fn drive<S: ServiceSession>(mut m: S, ops: Vec<Op>) {
    let mut now = Instant::ZERO;
    for op in ops {
        let was_finished = m.is_finished();
        match op {
            Op::Data(d) => m.handle_data(now, 99, 0, d),
            Op::Cookie(c) => m.handle_cookie_echo(now, c),
            Op::Event(e) => m.handle_event(now, e),
            Op::Advance(ms) => {
                now += Duration::from_millis(ms);
                // Fire every due timer (bounded: compute-bound machines ask again at once).
                for _ in 0..50 {
                    match m.poll_timeout() {
                        Some(t) if t <= now => m.handle_timeout(now),
                        _ => break,
                    }
                    drain(&mut m, was_finished);
                }
            }
        }
        drain(&mut m, was_finished);
    }
}

fn drain<S: ServiceSession>(m: &mut S, was_finished: bool) {
    for _ in 0..10_000 {
        let Some(o) = m.poll_output() else { return };
        if was_finished {
            assert!(
                matches!(o, ServiceOutput::Log { .. } | ServiceOutput::Load(_)),
                "output after the session ended"
            );
        }
    }
}

struct NullHost;

impl ScriptingHost for NullHost {
    fn write_input(&mut self, _: &[u8]) -> Result<(), HostError> {
        Ok(())
    }
    fn write_environment(&mut self, _: &[u8]) -> Result<(), HostError> {
        Ok(())
    }
    fn fetch_cached_environment(&mut self, hash: &EnvironmentHash) -> bool {
        hash[0] & 1 == 1
    }
    fn store_environment(&mut self, _: &EnvironmentHash, _: u64) {}
    fn start_work(&mut self, _: bool) -> Result<(), HostError> {
        Ok(())
    }
    fn poll_work(&mut self) -> Option<u32> {
        Some(0)
    }
    fn read_output(&mut self, buf: &mut [u8]) -> Result<usize, HostError> {
        Ok(buf.len().min(7))
    }
    fn cleanup(&mut self) {}
}

fn rng() -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(11)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn simple_servers(o in ops(raw().boxed())) {
        drive(EchoServer::new(), o.clone());
        drive(DiscardServer::new(), o.clone());
        drive(DaytimeServer::new(WallClock::default()), o.clone());
        drive(CharGenServer::new(CharGenConfig::default()), o);
    }

    #[test]
    fn pingpong(o in ops(pingpong_msg().boxed())) {
        drive(PingPongServer::new(PingPongServerConfig { failure_after: 3, ..Default::default() }), o.clone());
        drive(PingPongClient::new(PingPongClientConfig::default()), o);
    }

    #[test]
    fn calcapp_client(o in ops(calcapp_msg().boxed())) {
        let config = CalcAppClientConfig {
            job_interval: Duration::from_secs(2),
            runtime: Duration::from_secs(300),
            ..Default::default()
        };
        drive(CalcAppClient::new(config, rng(), Instant::ZERO), o);
    }

    #[test]
    fn calcapp_server(o in proptest::collection::vec((0u32..3, prop_oneof![
            4 => calcapp_msg().prop_map(Op::Data),
            1 => cookie().prop_map(Op::Cookie),
            2 => event().prop_map(Op::Event),
            3 => (0u64..20_000).prop_map(Op::Advance),
        ]), 0..80)) {
        let mut s = CalcAppServer::new(CalcAppServerConfig { max_jobs: 2, ..Default::default() }, Instant::ZERO);
        let mut now = Instant::ZERO;
        let mut r = rng();
        for (session, op) in o {
            match op {
                Op::Data(d) => s.handle_data(now, session, &d),
                Op::Cookie(c) => s.handle_cookie_echo(now, session, &c),
                Op::Event(SessionEvent::PeerClosed) => s.handle_session_closed(now, session),
                Op::Event(SessionEvent::SendFailed) => s.handle_send_failed(now, session),
                Op::Event(SessionEvent::ServerShutdown) => s.handle_shutdown(now, &mut r),
                Op::Event(_) => {}
                Op::Advance(ms) => {
                    now += Duration::from_millis(ms);
                    while let Some(t) = s.poll_timeout() {
                        if t > now { break; }
                        s.handle_timeout(now);
                        prop_assert!(s.poll_timeout().is_none_or(|t2| t2 > now || t2 >= t));
                    }
                }
            }
            while let Some(o) = s.poll_output() {
                if let CalcAppServerOutput::Load(l) = o {
                    prop_assert!((0.0..=1.0).contains(&l));
                }
            }
            prop_assert!(s.jobs() <= 2);
        }
    }

    #[test]
    fn fractal(o in ops(fgp_msg().boxed()), p in small_param()) {
        drive(FractalServer::new(FractalServerConfig { iterations_per_step: 200, failure_after: 2, ..Default::default() }), o.clone());
        drive(FractalClient::new(p, Duration::from_secs(5)), o);
    }

    #[test]
    fn scripting(o in ops(ssp_msg().boxed()), with_env in any::<bool>()) {
        drive(ScriptingServer::new(ScriptingServerConfig::default(), NullHost, NoKeyring), o.clone());
        drive(ScriptingRejectSession::new("host"), o.clone());
        let env = with_env.then(|| Bytes::from_static(b"environment"));
        let client = ScriptingClient::new(ScriptingClientConfig::default(), rng(), Bytes::from(vec![5u8; 40_000]), env).unwrap();
        drive(client, o);
    }
}
