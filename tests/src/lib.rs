//! Shared helpers for rserpool's integration, simulation and property tests.
#![warn(missing_docs)]

pub mod cluster;
pub mod scenarios;
pub mod sim;
