//! loms: orders and stock in PostgreSQL behind gRPC and HTTP/JSON, with every status change
//! published to Kafka through a transactional outbox.

pub mod admin;
pub mod batcher;
pub mod cli;
pub mod config;
pub mod database;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod health;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod relay;
pub mod service;
pub mod startup;
pub mod storage;
pub mod tls;
