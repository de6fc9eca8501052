//! The schema guard: a committed snapshot of the released schemas, and the rules that make a
//! change to them safe for every existing reader and writer (buf's `breaking` rules, wire and
//! JSON, and a schema registry's FULL compatibility, in spirit).
//!
//! The snapshot is the `FileDescriptorSet` protox compiles, without source info, in Protobuf
//! text format: it diffs readably in review and loads back into a descriptor pool, so a decoder
//! can be built from it.

use std::fmt;
use std::path::Path;

use prost::Message;
use prost_reflect::text_format::FormatOptions;
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, EnumDescriptor, FieldDescriptor, Kind,
    MessageDescriptor, ServiceDescriptor,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const FILE_DESCRIPTOR_SET: &str = "google.protobuf.FileDescriptorSet";

/// Compiles `files` (relative to `root`) into a descriptor pool, without source info.
pub fn compile(root: &Path, files: &[&str]) -> Result<DescriptorPool> {
    compile_in(&[root], files)
}

/// Compiles `files`, each found in the first of `roots` holding it.
fn compile_in(roots: &[&Path], files: &[&str]) -> Result<DescriptorPool> {
    let mut fds = protox::compile(files, roots)?;
    for file in &mut fds.file {
        file.source_code_info = None;
    }
    Ok(DescriptorPool::decode(fds.encode_to_vec().as_slice())?)
}

/// Compiles `text` as the proto file `name` (e.g. a changed copy of one of ours, in a test); its
/// imports are found in `imports`.
pub fn compile_text(name: &str, text: &str, imports: &Path) -> Result<DescriptorPool> {
    static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let copy = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("proto-{}-{copy}", std::process::id()));
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap_or(&dir))?;
    std::fs::write(&path, text)?;
    let pool = compile_in(&[dir.as_path(), imports], &[name]);
    let _ = std::fs::remove_dir_all(&dir);
    pool
}

/// The pool as a snapshot: its descriptor set in Protobuf text format.
pub fn to_snapshot(pool: &DescriptorPool) -> Result<String> {
    let desc = descriptor_set_message()?;
    let fds = prost_types::FileDescriptorSet {
        file: pool.file_descriptor_protos().cloned().collect(),
    };
    let message = DynamicMessage::decode(desc, fds.encode_to_vec().as_slice())?;
    let text = message.to_text_format_with_options(&FormatOptions::new().pretty(true));
    Ok(format!("{text}\n"))
}

/// A snapshot loaded back into a descriptor pool.
pub fn from_snapshot(text: &str) -> Result<DescriptorPool> {
    let message = DynamicMessage::parse_text_format(descriptor_set_message()?, text)?;
    Ok(DescriptorPool::decode(message.encode_to_vec().as_slice())?)
}

fn descriptor_set_message() -> Result<MessageDescriptor> {
    DescriptorPool::global()
        .get_message_by_name(FILE_DESCRIPTOR_SET)
        .ok_or_else(|| "descriptor.proto is not in the well-known types".into())
}

/// One change that breaks existing readers or writers: the rule and what broke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub rule: Rule,
    pub what: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({})",
            self.rule.name(),
            self.what,
            self.rule.why()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    FileMoved,
    MessageRemoved,
    FieldRemoved,
    FieldRenumbered,
    FieldRenamed,
    FieldTypeChanged,
    FieldCardinalityChanged,
    FieldOneofChanged,
    FieldJsonNameChanged,
    ReservedNumberReused,
    ReservedNameReused,
    EnumRemoved,
    EnumValueRemoved,
    EnumValueRenamed,
    ServiceRemoved,
    RpcRemoved,
    RpcTypeChanged,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Self::FileMoved => "FILE_PACKAGE_CHANGED",
            Self::MessageRemoved => "MESSAGE_REMOVED_OR_RENAMED",
            Self::FieldRemoved => "FIELD_REMOVED_WITHOUT_RESERVATION",
            Self::FieldRenumbered => "FIELD_NUMBER_CHANGED",
            Self::FieldRenamed => "FIELD_NAME_CHANGED",
            Self::FieldTypeChanged => "FIELD_TYPE_CHANGED",
            Self::FieldCardinalityChanged => "FIELD_CARDINALITY_CHANGED",
            Self::FieldOneofChanged => "FIELD_ONEOF_CHANGED",
            Self::FieldJsonNameChanged => "FIELD_JSON_NAME_CHANGED",
            Self::ReservedNumberReused => "RESERVED_NUMBER_REUSED",
            Self::ReservedNameReused => "RESERVED_NAME_REUSED",
            Self::EnumRemoved => "ENUM_REMOVED_OR_RENAMED",
            Self::EnumValueRemoved => "ENUM_VALUE_REMOVED_WITHOUT_RESERVATION",
            Self::EnumValueRenamed => "ENUM_VALUE_NAME_CHANGED",
            Self::ServiceRemoved => "SERVICE_REMOVED_OR_RENAMED",
            Self::RpcRemoved => "RPC_REMOVED_OR_RENAMED",
            Self::RpcTypeChanged => "RPC_REQUEST_OR_RESPONSE_CHANGED",
        }
    }

    fn why(self) -> &'static str {
        match self {
            Self::FileMoved | Self::MessageRemoved | Self::EnumRemoved => {
                "its full name is what readers, kafka-ui and the message-type header refer to"
            }
            Self::FieldRemoved | Self::EnumValueRemoved => {
                "reserve its number and name so that they are never reused"
            }
            Self::FieldRenumbered | Self::FieldTypeChanged | Self::FieldCardinalityChanged => {
                "old readers would misread or drop the field on the wire"
            }
            Self::FieldOneofChanged => "readers would see a different set of fields at once",
            Self::FieldRenamed | Self::FieldJsonNameChanged | Self::EnumValueRenamed => {
                "the JSON form (HTTP gateway, kafka-ui) would change"
            }
            Self::ReservedNumberReused | Self::ReservedNameReused => {
                "old data with the retired field would be read as the new one"
            }
            Self::ServiceRemoved | Self::RpcRemoved | Self::RpcTypeChanged => {
                "existing clients would call something that is not there any more"
            }
        }
    }
}

/// Every change from `old` to `new` that breaks an existing reader or writer of the packages
/// starting with `package`; additions pass.
pub fn breaking_changes(old: &DescriptorPool, new: &DescriptorPool, package: &str) -> Vec<Break> {
    let mut breaks = Vec::new();
    let mut broke = |rule, what: String| breaks.push(Break { rule, what });
    let ours = |name: &str| name == package || name.starts_with(&format!("{package}."));
    for file in old.files().filter(|f| ours(f.package_name())) {
        if let Some(moved) = new.get_file_by_name(file.name()) {
            if moved.package_name() != file.package_name() {
                let what = format!(
                    "{}: package {} is now {}",
                    file.name(),
                    file.package_name(),
                    moved.package_name()
                );
                broke(Rule::FileMoved, what);
            }
        }
    }
    for message in old.all_messages().filter(|m| ours(m.package_name())) {
        if message.is_map_entry() {
            continue; // judged with the map field that owns it
        }
        match new.get_message_by_name(message.full_name()) {
            None => broke(Rule::MessageRemoved, message.full_name().to_string()),
            Some(now) => compare_messages(&message, &now, &mut broke),
        }
    }
    for e in old.all_enums().filter(|e| ours(e.package_name())) {
        match new.get_enum_by_name(e.full_name()) {
            None => broke(Rule::EnumRemoved, e.full_name().to_string()),
            Some(now) => compare_enums(&e, &now, &mut broke),
        }
    }
    for service in old.services().filter(|s| ours(s.package_name())) {
        match new.get_service_by_name(service.full_name()) {
            None => broke(Rule::ServiceRemoved, service.full_name().to_string()),
            Some(now) => compare_services(&service, &now, &mut broke),
        }
    }
    breaks
}

/// A field's type as a reader sees it on the wire.
fn kind(field: &FieldDescriptor) -> String {
    match field.kind() {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => e.full_name().to_string(),
        scalar => format!("{scalar:?}"),
    }
}

/// singular / optional (with presence) / repeated / map.
fn cardinality(field: &FieldDescriptor) -> &'static str {
    if field.is_map() {
        "map"
    } else if field.is_list() {
        "repeated"
    } else if field.cardinality() == Cardinality::Required {
        "required"
    } else if field.supports_presence()
        && oneof(field).is_none()
        && !matches!(field.kind(), Kind::Message(_))
    {
        "optional"
    } else {
        "singular"
    }
}

/// The real oneof a field belongs to (not the synthetic one of a proto3 `optional`).
fn oneof(field: &FieldDescriptor) -> Option<String> {
    field
        .containing_oneof()
        .filter(|o| !o.is_synthetic())
        .map(|o| o.name().to_string())
}

fn compare_messages(
    old: &MessageDescriptor,
    new: &MessageDescriptor,
    broke: &mut impl FnMut(Rule, String),
) {
    let name = old.full_name();
    for field in old.fields() {
        let what = format!("{name}.{} = {}", field.name(), field.number());
        if let Some(moved) = new.get_field_by_name(field.name()) {
            if moved.number() != field.number() {
                broke(
                    Rule::FieldRenumbered,
                    format!("{what} is now {}", moved.number()),
                );
                continue;
            }
        }
        let Some(now) = new.get_field(field.number()) else {
            let reserved = new.reserved_ranges().any(|r| r.contains(&field.number()))
                && new.reserved_names().any(|n| n == field.name());
            if !reserved {
                broke(Rule::FieldRemoved, what);
            }
            continue;
        };
        if now.name() != field.name() {
            broke(Rule::FieldRenamed, format!("{what} is now {}", now.name()));
        }
        if now.json_name() != field.json_name() {
            let change = format!("{} to {}", field.json_name(), now.json_name());
            broke(Rule::FieldJsonNameChanged, format!("{what}: {change}"));
        }
        if kind(&now) != kind(&field) {
            let change = format!("{} to {}", kind(&field), kind(&now));
            broke(Rule::FieldTypeChanged, format!("{what}: {change}"));
        }
        if cardinality(&now) != cardinality(&field) {
            let change = format!("{} to {}", cardinality(&field), cardinality(&now));
            broke(Rule::FieldCardinalityChanged, format!("{what}: {change}"));
        }
        if oneof(&now) != oneof(&field) {
            let change = format!("{:?} to {:?}", oneof(&field), oneof(&now));
            broke(Rule::FieldOneofChanged, format!("{what}: {change}"));
        }
    }
    for range in old.reserved_ranges() {
        for field in new.fields().filter(|f| range.contains(&f.number())) {
            let what = format!("{name}.{} = {}", field.name(), field.number());
            broke(Rule::ReservedNumberReused, what);
        }
    }
    for reserved in old.reserved_names() {
        if new.get_field_by_name(reserved).is_some() {
            broke(Rule::ReservedNameReused, format!("{name}.{reserved}"));
        }
    }
}

fn compare_enums(old: &EnumDescriptor, new: &EnumDescriptor, broke: &mut impl FnMut(Rule, String)) {
    let name = old.full_name();
    for value in old.values() {
        let what = format!("{name}.{} = {}", value.name(), value.number());
        match new.get_value(value.number()) {
            None => {
                let reserved = new.reserved_ranges().any(|r| r.contains(&value.number()))
                    && new.reserved_names().any(|n| n == value.name());
                if !reserved {
                    broke(Rule::EnumValueRemoved, what);
                }
            }
            Some(now) if now.name() != value.name() => {
                broke(
                    Rule::EnumValueRenamed,
                    format!("{what} is now {}", now.name()),
                );
            }
            Some(_) => {}
        }
    }
    for range in old.reserved_ranges() {
        for value in new.values().filter(|v| range.contains(&v.number())) {
            let what = format!("{name}.{} = {}", value.name(), value.number());
            broke(Rule::ReservedNumberReused, what);
        }
    }
    for reserved in old.reserved_names() {
        if new.get_value_by_name(reserved).is_some() {
            broke(Rule::ReservedNameReused, format!("{name}.{reserved}"));
        }
    }
}

fn compare_services(
    old: &ServiceDescriptor,
    new: &ServiceDescriptor,
    broke: &mut impl FnMut(Rule, String),
) {
    for method in old.methods() {
        let what = format!("{}/{}", old.full_name(), method.name());
        let Some(now) = new.methods().find(|m| m.name() == method.name()) else {
            broke(Rule::RpcRemoved, what);
            continue;
        };
        let shape = |m: &prost_reflect::MethodDescriptor| {
            (
                m.input().full_name().to_string(),
                m.output().full_name().to_string(),
                m.is_client_streaming(),
                m.is_server_streaming(),
            )
        };
        if shape(&now) != shape(&method) {
            let change = format!("{:?} to {:?}", shape(&method), shape(&now));
            broke(Rule::RpcTypeChanged, format!("{what}: {change}"));
        }
    }
}

/// A released schema: its proto (relative to `root`, from the repository root), its package,
/// and where its snapshot is committed.
pub struct Released {
    pub root: &'static str,
    pub file: &'static str,
    pub package: &'static str,
    pub snapshot: &'static str,
}

pub const RELEASED: [Released; 2] = [
    Released {
        root: "api/proto",
        file: "loms/v1/loms.proto",
        package: "loms",
        snapshot: "api/schema-snapshot.txtpb",
    },
    Released {
        root: "events-proto/proto",
        file: "loms/events/v1/order_event.proto",
        package: "loms.events.v1",
        snapshot: "events-proto/schema-snapshot.txtpb",
    },
];
