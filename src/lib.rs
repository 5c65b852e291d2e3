//! Wiring of the `coi-bridge` binary: configuration and start-up of the hub and its sides.

pub mod app;
pub mod config;
