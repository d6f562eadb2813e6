//! The embedding API's error type.

use crate::driver::Stopped;
use rserpool_core::handlespace::limits::InvalidValue;
use rserpool_core::pool_element::RegistrationFailure;
use rserpool_core::pool_user::ResolutionFailure;
use rserpool_core::session::{SendError, SessionCloseReason, SessionFailure};
use std::fmt;
use std::io;
use std::time::Duration;

/// What can go wrong in the embedding API ([`PoolElement`](crate::PoolElement),
/// [`PoolUser`](crate::PoolUser), [`Session`](crate::Session),
/// [`Registrar`](crate::Registrar)).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Opening a socket failed (bind, listen, multicast join).
    Io(io::Error),
    /// The configuration can never work (empty pool handle, port 0 advertised, no address
    /// to advertise, ...).
    Config(ConfigError),
    /// The registration failed (no registrar found, no answer, or rejected).
    Registration(RegistrationFailure),
    /// A handle resolution found no PE or no registrar.
    Resolution(ResolutionFailure),
    /// The session gave up ([`rserpool_core::session::PoolUserSessionConfig::max_attempts`]).
    Session(SessionFailure),
    /// A message could not be sent (PPID 11 is the control channel; queue full during a
    /// failover; no such session).
    Send(SendError),
    /// The session was closed: by the peer (`Some(reason)`, PE side) or by the application.
    Closed(Option<SessionCloseReason>),
    /// The policy has no load value ([`PoolElement::set_load`](crate::PoolElement::set_load)).
    NoLoad,
    /// The operation did not finish in time.
    Timeout(Duration),
    /// The driver task is gone (stopped, killed, or its executor dropped it).
    Stopped,
}

/// An invalid configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value the core refuses (pool handle length, PE identifier 0, ...).
    Invalid(InvalidValue),
    /// A pool element listens on a wildcard address and no address to advertise was given
    /// or could be found (no static registrar to route towards).
    NoAddress,
    /// No registrar to talk to: no static registrar and no announce group.
    NoRegistrar,
    /// The transport mode cannot be used on this host (SCTP without kernel support).
    Transport(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid(v) => write!(f, "invalid value: {v:?}"),
            ConfigError::NoAddress => f.write_str(
                "listening on a wildcard address: set the addresses to advertise \
                 (or a static registrar to find them)",
            ),
            ConfigError::NoRegistrar => {
                f.write_str("no registrar: give static registrars or an announce group")
            }
            ConfigError::Transport(why) => write!(f, "transport unavailable: {why}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Config(e) => write!(f, "configuration: {e}"),
            Error::Registration(RegistrationFailure::NoRegistrar) => {
                f.write_str("registration failed: no registrar found")
            }
            Error::Registration(RegistrationFailure::Timeout) => {
                f.write_str("registration failed: the registrar did not answer")
            }
            Error::Registration(RegistrationFailure::Rejected(e)) => match e {
                Some(e) => write!(f, "registration rejected: {e:?}"),
                None => f.write_str("registration rejected"),
            },
            Error::Registration(RegistrationFailure::RegistrarError(e)) => {
                write!(f, "registration failed: registrar error {e:?}")
            }
            Error::Resolution(c) => match c {
                ResolutionFailure::NotFound => f.write_str("pool not found or empty"),
                ResolutionFailure::OnlySuspects => {
                    f.write_str("every pool element is suspected unreachable")
                }
                ResolutionFailure::NoRegistrar => f.write_str("no registrar found"),
                ResolutionFailure::Timeout => f.write_str("the registrar did not answer"),
                ResolutionFailure::Error(e) => write!(f, "registrar error {e:?}"),
            },
            Error::Session(c) => write!(f, "session failed: {c:?}"),
            Error::Send(e) => write!(f, "send failed: {e}"),
            Error::Closed(Some(r)) => write!(f, "session closed by the peer ({r:?})"),
            Error::Closed(None) => f.write_str("session closed"),
            Error::NoLoad => f.write_str("the policy has no load value"),
            Error::Timeout(d) => write!(f, "timed out after {d:?}"),
            Error::Stopped => f.write_str("the driver has stopped"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Config(e) => Some(e),
            Error::Send(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<Stopped> for Error {
    fn from(_: Stopped) -> Self {
        Error::Stopped
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        Error::Send(e)
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<InvalidValue> for Error {
    fn from(e: InvalidValue) -> Self {
        Error::Config(ConfigError::Invalid(e))
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Io(e) => e.kind(),
            Error::Config(_) | Error::NoLoad => io::ErrorKind::InvalidInput,
            Error::Send(SendError::ControlPpid) => io::ErrorKind::InvalidInput,
            Error::Send(SendError::QueueFull) => io::ErrorKind::WouldBlock,
            Error::Send(SendError::NoSession) | Error::Closed(_) | Error::Stopped => {
                io::ErrorKind::NotConnected
            }
            Error::Timeout(_) => io::ErrorKind::TimedOut,
            Error::Registration(_) | Error::Resolution(_) | Error::Session(_) => {
                io::ErrorKind::ConnectionRefused
            }
        };
        match e {
            Error::Io(e) => e,
            e => io::Error::new(kind, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_io_conversion() {
        let e = Error::Resolution(ResolutionFailure::NotFound);
        assert_eq!(e.to_string(), "pool not found or empty");
        let io: io::Error = Error::Send(SendError::ControlPpid).into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
        let io: io::Error = Error::Closed(None).into();
        assert_eq!(io.kind(), io::ErrorKind::NotConnected);
        assert_eq!(io.to_string(), "session closed");
        let e: Error = io::Error::from(io::ErrorKind::AddrInUse).into();
        assert!(matches!(e, Error::Io(ref i) if i.kind() == io::ErrorKind::AddrInUse));
    }
}
