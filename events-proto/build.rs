fn main() -> Result<(), Box<dyn std::error::Error>> {
    build_support::compile(&build_support::Protos {
        root: std::path::Path::new("proto"),
        files: &["loms/events/v1/order_event.proto"],
        descriptor_file: "events_descriptor.bin",
        grpc: false,
        json_packages: &[],
        http_service: None,
    })
}
