//! The driver's clock: `std::time::Instant` at start ↔ [`rserpool_core::Instant`]
//! (microseconds since start).

use std::time::Duration;

/// Converts between the wall clock of the driver (`std::time::Instant`) and the machines'
/// explicit time ([`rserpool_core::Instant`], microseconds since [`Clock::start`]).
///
/// ```
/// use rserpool_async_std::Clock;
/// use std::time::Duration;
///
/// let clock = Clock::new();
/// let t = clock.start() + Duration::from_millis(1500);
/// assert_eq!(clock.to_core(t).as_millis(), 1500);
/// assert_eq!(clock.to_std(clock.to_core(t)), t);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    start: std::time::Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    /// A clock whose epoch ([`rserpool_core::Instant::ZERO`]) is now.
    pub fn new() -> Clock {
        Clock::starting_at(std::time::Instant::now())
    }

    /// A clock whose epoch is `start`.
    pub fn starting_at(start: std::time::Instant) -> Clock {
        Clock { start }
    }

    /// The wall-clock instant of [`rserpool_core::Instant::ZERO`].
    pub fn start(&self) -> std::time::Instant {
        self.start
    }

    /// The current time for the machines.
    pub fn now(&self) -> rserpool_core::Instant {
        self.to_core(std::time::Instant::now())
    }

    /// `t` as machine time (instants before the start map to zero).
    pub fn to_core(&self, t: std::time::Instant) -> rserpool_core::Instant {
        let us = t.saturating_duration_since(self.start).as_micros();
        rserpool_core::Instant::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    }

    /// Machine time `t` as a wall-clock instant (saturating far in the future).
    pub fn to_std(&self, t: rserpool_core::Instant) -> std::time::Instant {
        let d = Duration::from_micros(t.as_micros());
        self.start
            .checked_add(d)
            .unwrap_or_else(|| self.start + Duration::from_secs(100 * 365 * 24 * 3600))
    }
}
