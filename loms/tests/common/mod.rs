//! Shared by the integration tests: an application on a fresh database, Kafka helpers.
#![allow(dead_code)] // each test binary uses a part of it

pub mod app;
pub mod checks;
pub mod compose;
pub mod kafka;
pub mod process;
