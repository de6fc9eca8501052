//! What loms and the notifier both run on, written once: logging that never holds the service,
//! the shutdown signal, Kafka client settings with their pass-through properties, back-off, and
//! secrets in configuration, listeners that bound their connections, HTTP serving and the admin
//! listener.

pub mod abridged;
pub mod admin;
pub mod backoff;
pub mod config;
pub mod http;
pub mod kafka;
pub mod listener;
pub mod metrics;
pub mod reference;
pub mod secret;
pub mod shutdown;
pub mod telemetry;

pub use backoff::Backoff;
