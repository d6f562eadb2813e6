//! The reference programs with RSPLIB's names and options, as library code (each binary in
//! `src/bin/` is a call to one `main_with`), plus what they share.
//!
//! | program | module |
//! |---|---|
//! | `rspregistrar` | [`registrar`] |
//! | `rspserver` | [`server`] |
//! | `rspterminal` | [`terminal`] |
//! | `rspserver -pingpong/-calcapp/-fractal/-scripting` | [`services::pe`] |
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
