//! The reference programs with RSPLIB's names and options, as library code (each binary in
//! `src/bin/` is a call to one `main_with`), plus what they share.
//!
//! | program | module |
//! |---|---|
//! | `rspregistrar` | [`registrar`] |
//! | `rspserver` (driver, options, main loop) | [`server`] |
//! | `rspserver`'s application: every service's sessions | [`services::pe`] |
//! | `rspterminal` | [`terminal`] |
//! | `pingpongclient`, `calcappclient`, `scriptingclient`, `fractalpooluser` | [`services`] |
//! | `rserpool-demo` | [`demo`] |

pub mod cluster;
pub mod common;
pub mod daemon;
pub mod demo;
pub mod registrar;
pub mod registrar_stats;
pub mod server;
pub mod services;
pub mod terminal;
