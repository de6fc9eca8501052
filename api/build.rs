fn main() -> Result<(), Box<dyn std::error::Error>> {
    build_support::compile(&build_support::Protos {
        root: std::path::Path::new("proto"),
        files: &["loms/v1/loms.proto"],
        descriptor_file: "loms_descriptor.bin",
        grpc: true,
        json_packages: &[".loms"],
        http_service: Some("loms.Loms"),
    })
}
