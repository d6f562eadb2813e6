//! Fuzzing entry point (filled in below).
