//! Shared by the build scripts of `api` and `events-proto`: compiles `.proto` files with
//! `protox` (pure Rust, so no system `protoc` is needed), generates prost/tonic code, optionally
//! the canonical Protobuf JSON mapping (pbjson), and writes the encoded `FileDescriptorSet` to
//! `OUT_DIR` so that binaries can serve reflection and kafka-ui can read the same schema; for a
//! service with `google.api.http` rules, its gateway routes and OpenAPI document as well.

use std::error::Error;
use std::path::{Path, PathBuf};

pub mod gateway;
pub mod schema;

/// What one crate compiles.
pub struct Protos<'a> {
    /// Folder the `.proto` imports are relative to.
    pub root: &'a Path,
    /// Files to compile, relative to `root`.
    pub files: &'a [&'a str],
    /// File name of the descriptor set written to `OUT_DIR`.
    pub descriptor_file: &'a str,
    /// Generate tonic server and client code.
    pub grpc: bool,
    /// Generate serde impls following the Protobuf JSON mapping for these packages
    /// (for example `.loms`); empty for none.
    pub json_packages: &'a [&'a str],
    /// The service (full name) whose `google.api.http` rules become `http_routes.rs` (a
    /// `HTTP_ROUTES` constant) and `openapi.json` in `OUT_DIR`; `None` for none.
    pub http_service: Option<&'a str>,
}

pub fn compile(protos: &Protos<'_>) -> Result<(), Box<dyn Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", protos.root.display());

    let mut compiler = protox::Compiler::new([protos.root])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(protos.files)?;
    // Encoded by protox itself: options keep their extensions (the http rules), which
    // prost_types' descriptors would drop.
    let encoded = compiler.encode_file_descriptor_set();
    std::fs::write(out_dir.join(protos.descriptor_file), &encoded)?;

    if let Some(name) = protos.http_service {
        let pool = compiler.descriptor_pool();
        let service = pool
            .get_service_by_name(name)
            .ok_or_else(|| format!("no service {name}"))?;
        let bindings = gateway::bindings(&pool, &service)?;
        let routes = gateway::routes_source("HTTP_ROUTES", &bindings);
        std::fs::write(out_dir.join("http_routes.rs"), routes)?;
        let version = std::env::var("CARGO_PKG_VERSION")?;
        let openapi = gateway::openapi(&service, &bindings, &version);
        std::fs::write(
            out_dir.join("openapi.json"),
            serde_json::to_string_pretty(&openapi)?,
        )?;
    }

    tonic_prost_build::configure()
        .build_server(protos.grpc)
        .build_client(protos.grpc)
        .compile_fds(compiler.file_descriptor_set())?;

    if !protos.json_packages.is_empty() {
        pbjson_build::Builder::new()
            .register_descriptors(&encoded)?
            // The contract: default values are written too, unknown request fields ignored.
            .emit_fields()
            .ignore_unknown_fields()
            .build(protos.json_packages)?;
    }
    Ok(())
}
