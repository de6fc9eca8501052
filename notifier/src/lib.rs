//! notifier: consumes the order events of loms in a consumer group and logs each one, at least
//! once; messages that do not decode go to a dead-letter topic.

pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod dedup;
pub mod handler;
pub mod kafka;
pub mod metrics;
pub mod startup;
