//! Several registrars (and stub PEs) on a deterministic in-test network: mentor download
//! with M-flag continuation, failure detection through the transport's signal, takeover
//! (competing initiators, two-registrar case), Takeover Server, H-bit keep-alives.

mod reg_common;

use reg_common::net::*;
use reg_common::*;
use rserpool_core::AssocId;
use rserpool_core::registrar::{PeerDownReason, PeerState, RegistrarEvent};
use rserpool_proto::EnrpMessage;
use rserpool_proto::asap::{EndpointKeepAlive, Registration};
use rserpool_proto::ids::{PeIdentifier, ServerId};
use rserpool_proto::{AsapMessage, Encode};

fn register_pe(net: &mut Net, pe_node: usize, reg: usize, pool: &str, id: u32) -> AssocId {
    let a = net.connect_pe(pe_node, reg);
    let ip = net.nodes[pe_node].ip.to_string();
    net.pe_send(pe_node, a, Registration::new(ph(pool), pe(id, &ip, 7000)));
    a
}

fn same_handlespace(net: &Net, a: usize, b: usize) {
    let (ha, hb) = (net.reg(a).handlespace(), net.reg(b).handlespace());
    assert_eq!(ha.element_count(), hb.element_count());
    assert_eq!(ha.checksum(), hb.checksum());
    let wa: Vec<_> = ha.walk(None).map(|e| e.info()).collect();
    let wb: Vec<_> = hb.walk(None).map(|e| e.info()).collect();
    assert_eq!(wa, wb);
}

#[test]
fn mentor_download_of_10000_elements_with_continuation() {
    let mut net = Net::new();
    let ipb: core::net::IpAddr = ip("10.0.0.2");
    let mut cb = net_config(0xb, ipb, &[]);
    cb.limits.max_elements_per_assoc = 20_000;
    let b = net.add_registrar("10.0.0.2", cb, 2);
    net.run_for(ms(10));
    let pe_node = net.add_pe("10.9.0.1", 7000);
    let a_pe = net.connect_pe(pe_node, b);
    for i in 0..10_000u32 {
        let pool = format!("pool-{:02}", i % 37);
        net.pe_send(
            pe_node,
            a_pe,
            Registration::new(ph(&pool), pe(i + 1, "10.9.0.1", 7000)),
        );
    }
    assert_eq!(net.reg(b).handlespace().element_count(), 10_000);
    net.run_for(secs(1));
    // A starts with B as static peer and downloads everything at once.
    let start = net.now;
    let a = net.add_registrar("10.0.0.1", net_config(0xa, ip("10.0.0.1"), &[ipb]), 1);
    net.run_for(ms(100));
    let ev = net.events_of(a);
    let done = ev
        .iter()
        .find_map(|(t, e)| match e {
            RegistrarEvent::MentorSyncComplete { mentor, elements } => {
                Some((*t, *mentor, *elements))
            }
            _ => None,
        })
        .expect("mentor sync completes");
    assert_eq!(done.1, Some(ServerId(0xb)));
    assert_eq!(done.2, 10_000);
    assert_eq!(
        done.0, start,
        "no 5 s of silence: done within the same instant here"
    );
    assert!(net.reg(a).startup_complete());
    same_handlespace(&net, a, b);
    assert_eq!(
        net.reg(a).handlespace().owner_checksum(ServerId(0xb)),
        net.reg(b).handlespace().owner_checksum(ServerId(0xb))
    );
    // 10,000 PEs at 128 per response: 79 responses, M set on all but the last.
    let responses: Vec<_> = net
        .wire
        .iter()
        .filter(|(_, from, to, _, _)| *from == b && *to == a)
        .filter_map(|(_, _, _, _, d)| match EnrpMessage::decode(d) {
            Ok(EnrpMessage::HandleTableResponse(r)) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(responses.len(), 79);
    assert!(responses[..78].iter().all(|r| r.more));
    assert!(!responses[78].more);
    let counts: usize = responses
        .iter()
        .map(|r| {
            r.entries
                .iter()
                .map(|e| e.pool_elements.len())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(counts, 10_000);
    // The first messages from A to B: Presence (R), then the mentor requests.
    let first: Vec<_> = net
        .wire
        .iter()
        .filter(|(_, from, to, _, _)| *from == a && *to == b)
        .take(4)
        .map(|(_, _, _, _, d)| EnrpMessage::decode(d).unwrap())
        .collect();
    assert!(matches!(&first[0], EnrpMessage::Presence(p) if p.reply_required));
    assert!(matches!(&first[2], EnrpMessage::ListRequest(_)));
    assert!(matches!(&first[3], EnrpMessage::HandleTableRequest(r) if !r.own_children_only));
    // Bulk transfers (`Machine::poll_bulk_transfer`): A's download runs on its association
    // to B from the step that sends its first Handle Table Request (before B's first
    // response) until after B's last response; B's walk to A from its first response (M=1)
    // until its last (M=0). Nothing else.
    let assoc_of = |n: usize, id: u32| {
        net.reg(n)
            .peers()
            .find(|p| p.server_id == ServerId(id))
            .and_then(|p| p.assoc)
            .expect("peer association")
    };
    let (ab, ba) = (assoc_of(a, 0xb), assoc_of(b, 0xa));
    let at = |from: usize, to: usize, want: fn(&EnrpMessage) -> bool| -> Vec<usize> {
        net.wire
            .iter()
            .enumerate()
            .filter(|(_, (_, f, t, _, _))| *f == from && *t == to)
            .filter(|(_, (_, _, _, _, d))| EnrpMessage::decode(d).is_ok_and(|m| want(&m)))
            .map(|(i, _)| i)
            .collect()
    };
    let requests = at(a, b, |m| matches!(m, EnrpMessage::HandleTableRequest(_)));
    let answers = at(b, a, |m| matches!(m, EnrpMessage::HandleTableResponse(_)));
    assert_eq!((requests.len(), answers.len()), (79, 79));
    // Each registrar's changes, (association, running), and where on the wire each came.
    let bulk_of = |n: usize| -> (Vec<(AssocId, bool)>, Vec<usize>) {
        net.bulk
            .iter()
            .filter(|(m, _, _)| *m == n)
            .map(|(_, t, i)| ((t.assoc, t.running), *i))
            .unzip()
    };
    let (changes_a, at_a) = bulk_of(a);
    assert_eq!(changes_a, vec![(ab, true), (ab, false)]);
    assert!(
        requests[0] < at_a[0] && at_a[0] <= answers[0],
        "A: started with its first request"
    );
    assert!(at_a[1] > answers[78], "A: ended after the last response");
    let (changes_b, at_b) = bulk_of(b);
    assert_eq!(changes_b, vec![(ba, true), (ba, false)]);
    assert!(
        answers[0] < at_b[0] && at_b[0] <= requests[1],
        "B: from its first response"
    );
    assert!(answers[78] < at_b[1], "B: ended with its last response");
    assert!(
        at_b[1] <= answers[78] + 1,
        "B: ended at once, {} messages after its last response",
        at_b[1] - answers[78]
    );
    // Replicas expire by their registration life unless refreshed; the PE keeps
    // re-registering at B, so nothing expires while B's updates flow.
    let peers: Vec<_> = net.reg(a).peers().map(|p| (p.server_id, p.state)).collect();
    assert_eq!(peers, vec![(ServerId(0xb), PeerState::Alive)]);
}

fn three_registrars() -> (Net, [usize; 3], usize, AssocId) {
    let mut net = Net::new();
    let ips = [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")];
    let a = net.add_registrar("10.0.0.1", net_config(1, ips[0], &[ips[1], ips[2]]), 1);
    let b = net.add_registrar("10.0.0.2", net_config(2, ips[1], &[ips[0], ips[2]]), 2);
    let c = net.add_registrar("10.0.0.3", net_config(3, ips[2], &[ips[0], ips[1]]), 3);
    net.run_for(secs(6));
    let pe_node = net.add_pe("10.9.0.1", 7000);
    let pa = register_pe(&mut net, pe_node, c, "EchoPool", 0x1f);
    net.run_for(secs(3));
    for n in [a, b, c] {
        let hs = net.reg(n).handlespace();
        assert_eq!(hs.element_count(), 1, "node {n}");
        assert_eq!(
            hs.get(&ph("EchoPool"), PeIdentifier(0x1f))
                .unwrap()
                .home_registrar(),
            ServerId(3)
        );
        assert_eq!(
            net.reg(n)
                .peers()
                .filter(|p| p.state == PeerState::Alive)
                .count(),
            2
        );
    }
    (net, [a, b, c], pe_node, pa)
}

#[test]
fn takeover_competing_initiators_lowest_id_wins() {
    let (mut net, [a, b, c], pe_node, _) = three_registrars();
    let kill_at = net.now;
    net.kill(c);
    net.run_for(secs(8));
    // Both A and B noticed the loss through the transport and started a takeover after
    // MAX-TIME-NO-RESPONSE (5 s), not last-heard + no-response.
    let started = |n: usize| {
        net.events_of(n)
            .iter()
            .find_map(|(t, e)| {
                matches!(e, RegistrarEvent::TakeoverStarted { target } if *target == ServerId(3))
                    .then_some(*t)
            })
            .expect("takeover started")
    };
    for n in [a, b] {
        assert_eq!(started(n) - kill_at, secs(5), "node {n}");
    }
    // A (id 1) wins: B gives up and acknowledges.
    let ea = net.events_of(a);
    let eb = net.events_of(b);
    assert!(ea.iter().any(|(_, e)| *e
        == RegistrarEvent::TakeoverCompleted {
            target: ServerId(3),
            elements: 1
        }));
    assert!(eb.iter().any(|(_, e)| *e
        == RegistrarEvent::TakeoverAbandoned {
            target: ServerId(3)
        }));
    assert!(
        !eb.iter()
            .any(|(_, e)| matches!(e, RegistrarEvent::TakeoverCompleted { .. }))
    );
    // The PE got a keep-alive with the H bit from A over a new association, and acked.
    let ka: Vec<_> = net
        .inbox(pe_node)
        .iter()
        .filter_map(|(_, m)| match m {
            AsapMessage::EndpointKeepAlive(k) if k.home => Some(k.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        ka,
        vec![EndpointKeepAlive {
            home: true,
            server_id: ServerId(1),
            pool_handle: ph("EchoPool"),
            pe_id: Some(PeIdentifier(0x1f)),
            ..Default::default()
        }]
    );
    let pa = net
        .reg(a)
        .handlespace()
        .get(&ph("EchoPool"), PeIdentifier(0x1f))
        .unwrap();
    assert_eq!(pa.home_registrar(), ServerId(1));
    assert!(
        pa.assoc().is_some(),
        "bound to the association the ack came over"
    );
    // B re-homed it on A's Takeover Server (RSPLIB never sends one).
    let pb = net
        .reg(b)
        .handlespace()
        .get(&ph("EchoPool"), PeIdentifier(0x1f))
        .unwrap();
    assert_eq!(pb.home_registrar(), ServerId(1));
    assert!(net
        .wire
        .iter()
        .any(|(_, f, t, _, d)| *f == a && *t == b
            && matches!(EnrpMessage::decode(d), Ok(EnrpMessage::TakeoverServer(m)) if m.target == ServerId(3))));
    // C left both peer lists (static entries revert to unknown).
    for n in [a, b] {
        let dead: Vec<_> = net
            .reg(n)
            .peers()
            .filter(|p| p.server_id == ServerId(3))
            .collect();
        assert!(dead.is_empty(), "node {n}");
    }
    same_handlespace(&net, a, b);
    assert_eq!(
        net.reg(a).handlespace().owner_checksum(ServerId(1)),
        net.reg(b).handlespace().owner_checksum(ServerId(1))
    );
    // Normal keep-alive monitoring from A continues.
    let before = net.inbox(pe_node).len();
    net.run_for(secs(6));
    assert!(net.inbox(pe_node).len() > before);
    assert!(
        net.reg(a)
            .handlespace()
            .contains(&ph("EchoPool"), PeIdentifier(0x1f))
    );
}

#[test]
fn takeover_completes_when_a_silent_peer_leaves_the_peer_list() {
    // B (owns nothing) dies a second after C: A's takeover of C waits for B's ack, which
    // never comes; once B itself is declared dead and leaves the peer list, nobody else must
    // agree and the takeover completes instead of expiring (an hsdump probe, which leaves
    // a peer entry behind, must not block takeovers either).
    let (mut net, [a, b, c], pe_node, _) = three_registrars();
    let kill_at = net.now;
    net.kill(c);
    net.run_for(secs(1));
    net.kill(b);
    net.run_for(secs(8));
    let ea = net.events_of(a);
    let at = |want: &RegistrarEvent| {
        ea.iter()
            .find_map(|(t, e)| (e == want).then_some(*t))
            .unwrap_or_else(|| panic!("{want:?} missing from {ea:?}"))
    };
    let started = at(&RegistrarEvent::TakeoverStarted {
        target: ServerId(3),
    });
    let b_down = at(&RegistrarEvent::PeerDown {
        server_id: ServerId(2),
        reason: PeerDownReason::NoResponse,
    });
    let completed = at(&RegistrarEvent::TakeoverCompleted {
        target: ServerId(3),
        elements: 1,
    });
    assert_eq!(started - kill_at, secs(5));
    assert_eq!(b_down - kill_at, secs(6));
    assert_eq!(completed, b_down, "completed as soon as B left");
    assert!(
        !ea.iter()
            .any(|(_, e)| matches!(e, RegistrarEvent::TakeoverAbandoned { .. }))
    );
    assert!(net.inbox(pe_node).iter().any(|(_, m)| matches!(m, AsapMessage::EndpointKeepAlive(k) if k.home && k.server_id == ServerId(1))));
    let e = net
        .reg(a)
        .handlespace()
        .get(&ph("EchoPool"), PeIdentifier(0x1f))
        .unwrap();
    assert_eq!(e.home_registrar(), ServerId(1));
}

#[test]
fn two_registrars_take_over_at_once() {
    let mut net = Net::new();
    let (ia, ic) = (ip("10.0.0.1"), ip("10.0.0.3"));
    let a = net.add_registrar("10.0.0.1", net_config(1, ia, &[ic]), 1);
    let c = net.add_registrar("10.0.0.3", net_config(3, ic, &[ia]), 3);
    net.run_for(secs(6));
    let pe_node = net.add_pe("10.9.0.1", 7000);
    register_pe(&mut net, pe_node, c, "P", 5);
    net.run_for(secs(1));
    let kill_at = net.now;
    net.kill(c);
    net.run_for(secs(6));
    let ea = net.events_of(a);
    let started = ea
        .iter()
        .find(|(_, e)| matches!(e, RegistrarEvent::TakeoverStarted { .. }))
        .unwrap()
        .0;
    let completed = ea
        .iter()
        .find(|(_, e)| {
            *e == RegistrarEvent::TakeoverCompleted {
                target: ServerId(3),
                elements: 1,
            }
        })
        .unwrap()
        .0;
    assert_eq!(started, completed, "nobody needs to ack");
    assert_eq!(completed - kill_at, secs(5));
    assert!(ea.iter().any(|(_, e)| *e
        == RegistrarEvent::PeerDown {
            server_id: ServerId(3),
            reason: PeerDownReason::TakeoverFinished
        }));
    let e = net
        .reg(a)
        .handlespace()
        .get(&ph("P"), PeIdentifier(5))
        .unwrap();
    assert_eq!(e.home_registrar(), ServerId(1));
    assert!(e.assoc().is_some());
    assert!(net.inbox(pe_node).iter().any(|(_, m)| matches!(m, AsapMessage::EndpointKeepAlive(k) if k.home && k.server_id == ServerId(1))));
}

#[test]
fn takeover_of_unreachable_pe_removes_it() {
    let mut net = Net::new();
    let (ia, ic) = (ip("10.0.0.1"), ip("10.0.0.3"));
    let a = net.add_registrar("10.0.0.1", net_config(1, ia, &[ic]), 1);
    let c = net.add_registrar("10.0.0.3", net_config(3, ic, &[ia]), 3);
    net.run_for(secs(6));
    let pe1 = net.add_pe("10.9.0.1", 7000);
    let pe2 = net.add_pe("10.9.0.2", 7000);
    register_pe(&mut net, pe1, c, "P", 1);
    register_pe(&mut net, pe2, c, "P", 2);
    net.run_for(secs(1));
    // PE 2 dies with its registrar; PE 1 does not ack keep-alives any more.
    net.set_ack(pe1, false);
    net.kill(c);
    net.kill(pe2);
    net.run_for(secs(5));
    // PE 2 could not be reached (connect failed): removed at once; PE 1 after the
    // keep-alive timeout.
    let removed: Vec<_> = net
        .events_of(a)
        .into_iter()
        .filter_map(|(t, e)| match e {
            RegistrarEvent::PeRemoved { pe_id, reason, .. } => Some((t, pe_id.0, reason)),
            _ => None,
        })
        .collect();
    use rserpool_core::registrar::RemovalReason::*;
    assert_eq!(removed, vec![(net.now, 2, TakeoverFailed)]);
    net.run_for(secs(5));
    let removed: Vec<_> = net
        .events_of(a)
        .into_iter()
        .filter_map(|(_, e)| match e {
            RegistrarEvent::PeRemoved { pe_id, reason, .. } => Some((pe_id.0, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(removed, vec![(2, TakeoverFailed), (1, KeepAliveTimeout)]);
    assert!(net.reg(a).handlespace().is_empty());
}

#[test]
fn peer_loss_detection_uses_the_transport_signal() {
    // Same kill, but C owns nothing: it is removed after MAX-TIME-NO-RESPONSE from the
    // association loss, not last-heard + no-response.
    let mut net = Net::new();
    let (ia, ic) = (ip("10.0.0.1"), ip("10.0.0.3"));
    let a = net.add_registrar("10.0.0.1", net_config(1, ia, &[ic]), 1);
    let c = net.add_registrar("10.0.0.3", net_config(3, ic, &[ia]), 3);
    net.run_for(secs(6));
    let kill_at = net.now;
    net.kill(c);
    net.run_for(secs(12));
    let down = net
        .events_of(a)
        .into_iter()
        .find_map(|(t, e)| match e {
            RegistrarEvent::PeerDown { server_id, reason } => Some((t, server_id, reason)),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        down,
        (kill_at + secs(5), ServerId(3), PeerDownReason::NoResponse)
    );
    // The static entry stays, with its id reset.
    let p: Vec<_> = net
        .reg(a)
        .peers()
        .map(|p| (p.server_id, p.is_static, p.state))
        .collect();
    assert_eq!(p, vec![(ServerId::NONE, true, PeerState::Unknown)]);
}

#[test]
fn restarted_peer_is_learned_again_and_handlespaces_converge() {
    let (mut net, [a, b, c], _pe, _) = three_registrars();
    // B re-learns everything C had after C is taken over; a PE registering at B shows up
    // at A through the Handle Update.
    let pe2 = net.add_pe("10.9.0.2", 7000);
    register_pe(&mut net, pe2, b, "Other", 9);
    net.run_for(ms(10));
    assert!(
        net.reg(a)
            .handlespace()
            .contains(&ph("Other"), PeIdentifier(9))
    );
    assert!(
        net.reg(c)
            .handlespace()
            .contains(&ph("Other"), PeIdentifier(9))
    );
    same_handlespace(&net, a, b);
    same_handlespace(&net, b, c);
    let _ = Encode::encoded_len(&ph("x"));
}

#[test]
fn pe_taken_over_may_register_over_its_own_association() {
    // Found by the cluster simulation: after a takeover the PE is bound to the association
    // the new home opened to it; when the PE (whose hunt found the same registrar) then
    // registers over its own association, that must be accepted and moved there, not
    // refused as "another association owns this PE" (the PE would stay out of the pool).
    let mut net = Net::new();
    let (ia, ic) = (ip("10.0.0.1"), ip("10.0.0.3"));
    let a = net.add_registrar("10.0.0.1", net_config(1, ia, &[ic]), 1);
    let c = net.add_registrar("10.0.0.3", net_config(3, ic, &[ia]), 3);
    net.run_for(secs(6));
    let pe_node = net.add_pe("10.9.0.1", 7000);
    register_pe(&mut net, pe_node, c, "P", 5);
    net.run_for(secs(1));
    net.kill(c);
    net.run_for(secs(6));
    let taken = net
        .reg(a)
        .handlespace()
        .get(&ph("P"), PeIdentifier(5))
        .unwrap()
        .assoc()
        .expect("bound to the takeover association");
    let assocs_before = net.reg(a).resource_usage().associations;
    let answers = |net: &Net, node: usize, on: AssocId| -> Vec<bool> {
        net.inbox(node)
            .iter()
            .filter_map(|(x, m)| match m {
                AsapMessage::RegistrationResponse(r) if *x == on => Some(r.reject),
                _ => None,
            })
            .collect()
    };
    let own = register_pe(&mut net, pe_node, a, "P", 5);
    assert_eq!(answers(&net, pe_node, own), vec![false]);
    let e = net
        .reg(a)
        .handlespace()
        .get(&ph("P"), PeIdentifier(5))
        .unwrap();
    assert_eq!(e.home_registrar(), ServerId(1));
    assert!(e.assoc().is_some_and(|x| x != taken));
    // The takeover association carries nothing any more and is closed.
    assert_eq!(net.reg(a).resource_usage().associations, assocs_before);
    // Another host still cannot take the PE away from the association it registered over.
    let intruder = net.add_pe("10.9.0.2", 7000);
    let other = register_pe(&mut net, intruder, a, "P", 5);
    assert_eq!(answers(&net, intruder, other), vec![true]);
}

#[test]
fn restarted_pe_registers_over_a_new_association_before_the_old_one_is_gone() {
    // Found by the cluster simulation: a PE process restarts and registers over a new
    // association before the registrar learns that the old one is dead (jitter, or a host
    // that rebooted within the transport's failure detection time). The registration is
    // refused (Non-unique PE Identifier: a live binding is never taken over by another
    // association, not even from the same host), the old binding is probed with a
    // keep-alive at once, and once that goes unanswered the PE's retry gets in.
    let mut net = Net::new();
    let ia = ip("10.0.0.1");
    let a = net.add_registrar("10.0.0.1", net_config(1, ia, &[]), 1);
    net.run_for(secs(6));
    let pe_node = net.add_pe("10.9.0.1", 7000);
    register_pe(&mut net, pe_node, a, "P", 5);
    let old = net
        .reg(a)
        .handlespace()
        .get(&ph("P"), PeIdentifier(5))
        .unwrap()
        .assoc()
        .unwrap();
    let answers = |net: &Net, on: AssocId| -> Vec<bool> {
        net.inbox(pe_node)
            .iter()
            .filter_map(|(x, m)| match m {
                AsapMessage::RegistrationResponse(r) if *x == on => Some(r.reject),
                _ => None,
            })
            .collect()
    };
    let keep_alives = |net: &Net| {
        net.inbox(pe_node)
            .iter()
            .filter(|(_, m)| matches!(m, AsapMessage::EndpointKeepAlive(_)))
            .count()
    };
    let before = keep_alives(&net);
    let fresh = register_pe(&mut net, pe_node, a, "P", 5);
    assert_eq!(answers(&net, fresh), vec![true]);
    assert!(keep_alives(&net) > before, "the old binding was not probed");
    // The old process is gone: its association is found lost (by the transport, or by the
    // probe's keep-alive timeout), which removes the stale binding ...
    let now = net.now;
    let reg = net.reg_mut(a);
    rserpool_core::Machine::handle_assoc_down(reg, now, old, rserpool_core::AssocDownReason::Lost);
    while rserpool_core::Machine::poll_output(reg).is_some() {}
    assert!(!net.reg(a).handlespace().contains(&ph("P"), PeIdentifier(5)));
    // ... and the restarted PE's retry is accepted.
    let retry = register_pe(&mut net, pe_node, a, "P", 5);
    assert_eq!(answers(&net, retry), vec![false]);
    let now_bound = net
        .reg(a)
        .handlespace()
        .get(&ph("P"), PeIdentifier(5))
        .unwrap()
        .assoc()
        .unwrap();
    assert_ne!(now_bound, old);
}
