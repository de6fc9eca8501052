//! Shared by the build scripts of `api` and `events-proto`: compiles `.proto` files with
//! `protox` (pure Rust, so no system `protoc` is needed), generates prost/tonic code, optionally
//! the canonical Protobuf JSON mapping (pbjson), and writes the encoded `FileDescriptorSet` to
//! `OUT_DIR` so that binaries can serve reflection and kafka-ui can read the same schema.

use std::error::Error;
use std::path::{Path, PathBuf};

use prost::Message;

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
}

pub fn compile(protos: &Protos<'_>) -> Result<(), Box<dyn Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", protos.root.display());

    let fds = protox::compile(protos.files, [protos.root])?;
    let encoded = fds.encode_to_vec();
    std::fs::write(out_dir.join(protos.descriptor_file), &encoded)?;

    tonic_prost_build::configure()
        .build_server(protos.grpc)
        .build_client(protos.grpc)
        .compile_fds(fds)?;

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
