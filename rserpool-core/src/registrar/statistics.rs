//! RSPLIB's registrar statistics (its `-statsfile=`, `-scalar=` and `-actionlogfile=`
//! outputs), kept by the machine; the driver writes the files.
//!
//! * [`RegistrarStatistics`]: RSPLIB's eight event counters and the current sizes
//!   (peers, pools, PEs, own PEs), as one line of its statistics file holds them;
//! * [`StatisticsAverages`]: the time-weighted averages of the sizes since start (its
//!   scalar file), from [`WeightedAverage`]s the machine updates whenever a size changes;
//! * [`ActionRecord`]: one line of its action log (what was received or sent, why), queued
//!   only with [`RegistrarConfig::action_log`](super::RegistrarConfig::action_log) and
//!   read with [`Registrar::poll_action`](super::Registrar::poll_action).

use core::time::Duration;

use rserpool_proto::ids::{PoolHandle, ServerId};

use crate::Instant;

/// RSPLIB's registrar counters (`struct RegistrarStatistics`) and current sizes: the
/// columns of its statistics file after the times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistrarStatistics {
    /// Peer list entries (RSPLIB counts every entry, also static ones not heard yet).
    pub peers: u64,
    /// Pools in the handlespace.
    pub pools: u64,
    /// PEs in the handlespace (own and replicas).
    pub pool_elements: u64,
    /// PEs whose home we are.
    pub owned_pool_elements: u64,
    /// Registrations accepted (new PEs and re-registrations: RSPLIB's
    /// `RegistrationCount`).
    pub registrations: u64,
    /// Re-registrations of a PE already registered (also in `registrations`).
    pub reregistrations: u64,
    /// PEs removed by an ASAP Deregistration.
    pub deregistrations: u64,
    /// ASAP Handle Resolutions received (answered or refused).
    pub handle_resolutions: u64,
    /// ASAP Endpoint Unreachables received (failure reports).
    pub failure_reports: u64,
    /// ENRP Handle Table Requests received (synchronisations).
    pub synchronizations: u64,
    /// ENRP Handle Updates received from other registrars.
    pub handle_updates: u64,
    /// ASAP Endpoint Keep-Alives sent.
    pub endpoint_keep_alives: u64,
}

/// A time-weighted average of a value that changes at known instants (RSPLIB's
/// `WeightedStatValue`): the integral of the value over time divided by the time since
/// the start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightedAverage {
    value: f64,
    /// Integral of the value (value × seconds) up to `updated`.
    cumulation: f64,
    start: Instant,
    updated: Instant,
}

impl WeightedAverage {
    /// Starts at `now` with value 0.
    pub fn new(now: Instant) -> WeightedAverage {
        WeightedAverage {
            value: 0.0,
            cumulation: 0.0,
            start: now,
            updated: now,
        }
    }

    /// The value is `v` from `now` on (an earlier `now` than the last update counts as
    /// the last update's time).
    pub fn update(&mut self, now: Instant, v: f64) {
        let now = now.max(self.updated);
        self.cumulation += self.value * now.saturating_duration_since(self.updated).as_secs_f64();
        self.value = v;
        self.updated = now;
    }

    /// The current value.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// The average from the start until `now` (the current value if no time has passed).
    pub fn average(&self, now: Instant) -> f64 {
        let now = now.max(self.updated);
        let total = now.saturating_duration_since(self.start).as_secs_f64();
        if total <= 0.0 {
            return self.value;
        }
        let c = self.cumulation
            + self.value * now.saturating_duration_since(self.updated).as_secs_f64();
        c / total
    }
}

/// Time-weighted averages of the registrar's sizes since it started (RSPLIB's scalar file:
/// "Registrar Average Number Of ...").
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StatisticsAverages {
    /// Pools.
    pub pools: f64,
    /// PEs.
    pub pool_elements: f64,
    /// Own PEs.
    pub owned_pool_elements: f64,
    /// Peer list entries.
    pub peers: f64,
}

/// Direction column of an action log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionDirection {
    /// `"Recv"`.
    Recv,
    /// `"Send"`.
    Send,
}

impl ActionDirection {
    /// RSPLIB's word.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionDirection::Recv => "Recv",
            ActionDirection::Send => "Send",
        }
    }
}

/// One line of RSPLIB's registrar action log: `Direction Protocol Action Reason Flags
/// Counter Time PoolHandle PoolElementID SenderID ReceiverID TargetID ErrorCode`. The
/// words are RSPLIB's, including its oddities (a Registration Response is logged as
/// `"Recv"`, an incoming Deregistration as `"Send"`), so that scripts written for its logs
/// keep working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionRecord {
    /// When it happened.
    pub at: Instant,
    /// `Recv` or `Send`.
    pub direction: ActionDirection,
    /// `ASAP`, `ENRP`, `MulticastASAP` or `MulticastENRP`.
    pub protocol: &'static str,
    /// The message or action, e.g. `Registration`, `HandleResolutionResponse`.
    pub action: &'static str,
    /// Why (`Requested`, `KeepAliveTransmissionTimer`, `AddPE`, ...; may be empty).
    pub reason: &'static str,
    /// Message flags.
    pub flags: u32,
    /// A count: items asked for / PEs returned by a handle resolution, failure reports so
    /// far for an Endpoint Unreachable, PEs of a Handle Table Response, peers of a List
    /// Response.
    pub counter: u64,
    /// A time: keep-alive timeout interval, round trip of a keep-alive, expiry interval.
    pub time: Duration,
    /// The pool, if any.
    pub pool_handle: Option<PoolHandle>,
    /// The PE identifier (0: none).
    pub pe_id: u32,
    /// Sending registrar (0: none).
    pub sender: ServerId,
    /// Receiving registrar (0: none).
    pub receiver: ServerId,
    /// Target registrar of a takeover message (0: none).
    pub target: ServerId,
    /// Error cause code (0: none).
    pub error_code: u16,
}

impl ActionRecord {
    /// A record with every optional column empty.
    pub fn new(
        at: Instant,
        direction: ActionDirection,
        protocol: &'static str,
        action: &'static str,
        reason: &'static str,
    ) -> ActionRecord {
        ActionRecord {
            at,
            direction,
            protocol,
            action,
            reason,
            flags: 0,
            counter: 0,
            time: Duration::ZERO,
            pool_handle: None,
            pe_id: 0,
            sender: ServerId::NONE,
            receiver: ServerId::NONE,
            target: ServerId::NONE,
            error_code: 0,
        }
    }
}

/// RSPLIB's action name of an ENRP message type.
pub(crate) fn enrp_action_name(ty: u8) -> &'static str {
    use rserpool_proto::enrp::msg_type as t;
    match ty {
        t::PRESENCE => "Presence",
        t::HANDLE_TABLE_REQUEST => "HandleTableRequest",
        t::HANDLE_TABLE_RESPONSE => "HandleTableResponse",
        t::HANDLE_UPDATE => "Update",
        t::LIST_REQUEST => "ListRequest",
        t::LIST_RESPONSE => "ListResponse",
        t::INIT_TAKEOVER => "InitTakeover",
        t::INIT_TAKEOVER_ACK => "InitTakeoverAck",
        t::TAKEOVER_SERVER => "TakeoverServer",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_average_integrates_over_time() {
        let t0 = Instant::from_millis(1_000);
        let mut w = WeightedAverage::new(t0);
        // 0 for 1 s, 4 for 2 s, 1 for 1 s: (0 + 8 + 1) / 4 = 2.25.
        w.update(t0 + Duration::from_secs(1), 4.0);
        w.update(t0 + Duration::from_secs(3), 1.0);
        assert_eq!(w.value(), 1.0);
        let avg = w.average(t0 + Duration::from_secs(4));
        assert!((avg - 2.25).abs() < 1e-9, "{avg}");
        // No time passed: the current value.
        assert_eq!(WeightedAverage::new(t0).average(t0), 0.0);
        // A stale `now` does not go back in time: 2 from 3 s on: (0 + 8 + 2) / 4.
        w.update(t0, 2.0);
        let avg = w.average(t0 + Duration::from_secs(4));
        assert!((avg - 2.5).abs() < 1e-9, "{avg}");
    }

    #[test]
    fn enrp_names_are_rsplib_words() {
        use rserpool_proto::enrp::msg_type as t;
        assert_eq!(enrp_action_name(t::HANDLE_UPDATE), "Update");
        assert_eq!(enrp_action_name(t::PRESENCE), "Presence");
        assert_eq!(enrp_action_name(t::TAKEOVER_SERVER), "TakeoverServer");
    }
}
