//! The HTTP face of a gRPC service, declared once in its proto: each method's `google.api.http`
//! rule becomes a route of the gateway (as Rust source for the serving crate) and an operation
//! of an OpenAPI 3 document, whose schemas follow the Protobuf JSON mapping (64-bit integers as
//! strings) and whose descriptions are the proto comments.

use std::collections::BTreeMap;

use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, FieldDescriptor, FileDescriptor, Kind,
    MessageDescriptor, MethodDescriptor, ServiceDescriptor, Value,
};
use serde_json::{json, Map, Value as Json};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The rule's verbs in `HttpRule`'s `pattern` oneof, as HTTP methods.
const VERBS: [(&str, &str); 5] = [
    ("get", "GET"),
    ("put", "PUT"),
    ("post", "POST"),
    ("delete", "DELETE"),
    ("patch", "PATCH"),
];

/// One method's HTTP binding.
pub struct Binding {
    pub method: MethodDescriptor,
    pub verb: &'static str,
    pub path: String,
    /// Whether the request message is the body (`body: "*"`) rather than the query string.
    pub body: bool,
}

/// The bindings of `service`'s methods, in declaration order; a method without a rule has none.
/// What the gateway does not implement (path templates, partial bodies, additional bindings,
/// custom verbs) is refused here, at build time, rather than served wrongly.
pub fn bindings(pool: &DescriptorPool, service: &ServiceDescriptor) -> Result<Vec<Binding>> {
    let http = pool
        .get_extension_by_name("google.api.http")
        .ok_or("google/api/annotations.proto is not imported")?;
    let mut bindings = Vec::new();
    for method in service.methods() {
        let options = method.options();
        if !options.has_extension(&http) {
            continue;
        }
        let Value::Message(rule) = options.get_extension(&http).into_owned() else {
            return Err(format!("{}: google.api.http is not a message", method.full_name()).into());
        };
        bindings.push(binding(method, &rule)?);
    }
    Ok(bindings)
}

fn binding(method: MethodDescriptor, rule: &DynamicMessage) -> Result<Binding> {
    let name = method.full_name().to_string();
    let text = |field: &str| -> String {
        rule.get_field_by_name(field)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let additional = rule
        .get_field_by_name("additional_bindings")
        .and_then(|v| v.as_list().map(<[Value]>::len))
        .unwrap_or(0);
    if additional > 0 || rule.has_field_by_name("custom") {
        return Err(format!("{name}: additional bindings and custom verbs are not served").into());
    }
    let (verb, path) = VERBS
        .iter()
        .find(|(field, _)| rule.has_field_by_name(field))
        .map(|(field, verb)| (*verb, text(field)))
        .ok_or_else(|| format!("{name}: its http rule names no method and path"))?;
    if path.contains('{') || !path.starts_with('/') {
        return Err(format!("{name}: path {path:?} is not a plain path").into());
    }
    let body = match text("body").as_str() {
        "" => false,
        "*" => true,
        other => return Err(format!("{name}: body {other:?}: only \"*\" is served").into()),
    };
    if body == matches!(verb, "GET" | "DELETE") {
        return Err(
            format!("{name}: {verb} with body {body}: GET and DELETE take the query").into(),
        );
    }
    Ok(Binding {
        method,
        verb,
        path,
        body,
    })
}

/// Rust source of a `&[HttpRoute]` constant named `name` listing the bindings; the serving crate
/// defines `HttpRoute { rpc, method, path, body }`.
pub fn routes_source(name: &str, bindings: &[Binding]) -> String {
    let mut out = format!("pub const {name}: &[HttpRoute] = &[\n");
    for b in bindings {
        out.push_str(&format!(
            "    HttpRoute {{ rpc: {:?}, method: {:?}, path: {:?}, body: {} }},\n",
            b.method.name(),
            b.verb,
            b.path,
            b.body
        ));
    }
    out.push_str("];\n");
    out
}

/// The OpenAPI 3 document of `service`'s bindings.
pub fn openapi(service: &ServiceDescriptor, bindings: &[Binding], version: &str) -> Json {
    let mut paths = Map::new();
    let mut schemas = BTreeMap::new();
    for b in bindings {
        let operation = operation(service, b, &mut schemas);
        let item = paths
            .entry(b.path.clone())
            .or_insert_with(|| Json::Object(Map::new()));
        item[b.verb.to_lowercase()] = operation;
    }
    schemas.insert("Status".to_string(), status_schema());
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": service.full_name(),
            "description": comment(&service.parent_file(), service.path()),
            "version": version,
        },
        "tags": [{ "name": service.name() }],
        "paths": paths,
        "components": { "schemas": schemas },
    });
    drop_empty_descriptions(&mut doc);
    doc
}

/// An element without a comment gets no `description` rather than an empty one.
fn drop_empty_descriptions(value: &mut Json) {
    match value {
        Json::Object(map) => {
            if map.get("description") == Some(&Json::String(String::new())) {
                map.remove("description");
            }
            map.values_mut().for_each(drop_empty_descriptions);
        }
        Json::Array(items) => items.iter_mut().for_each(drop_empty_descriptions),
        _ => {}
    }
}

fn operation(
    service: &ServiceDescriptor,
    b: &Binding,
    schemas: &mut BTreeMap<String, Json>,
) -> Json {
    let input = b.method.input();
    let mut op = json!({
        "operationId": format!("{}_{}", service.name(), b.method.name()),
        "tags": [service.name()],
        "summary": b.method.name(),
        "description": comment(&b.method.parent_file(), b.method.path()),
        "responses": {
            "200": {
                "description": "OK",
                "content": { "application/json": { "schema": reference(&b.method.output(), schemas) } },
            },
            "default": {
                "description": "An error: its gRPC code, message and details, with the HTTP status of the code",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Status" } } },
            },
        },
    });
    if b.body {
        op["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": reference(&input, schemas) } },
        });
    } else {
        let parameters: Vec<Json> = input
            .fields()
            .map(|field| {
                json!({
                    "name": field.json_name(),
                    "in": "query",
                    "description": comment(&input.parent_file(), field.path()),
                    "schema": field_schema(&field, schemas),
                })
            })
            .collect();
        op["parameters"] = Json::Array(parameters);
    }
    op
}

/// A `$ref` to `message`'s schema, adding it (and what it refers to) to `schemas`.
fn reference(message: &MessageDescriptor, schemas: &mut BTreeMap<String, Json>) -> Json {
    let name = message.full_name().to_string();
    if !schemas.contains_key(&name) {
        schemas.insert(name.clone(), Json::Null); // claimed first: a recursive message ends here
        let properties: Map<String, Json> = message
            .fields()
            .map(|field| {
                let mut schema = field_schema(&field, schemas);
                schema["description"] = comment(&message.parent_file(), field.path()).into();
                (field.json_name().to_string(), schema)
            })
            .collect();
        let schema = json!({
            "type": "object",
            "description": comment(&message.parent_file(), message.path()),
            "properties": properties,
        });
        schemas.insert(name.clone(), schema);
    }
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A field's schema in the Protobuf JSON mapping.
fn field_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Json>) -> Json {
    if let (true, Kind::Message(entry)) = (field.is_map(), field.kind()) {
        let values = field_schema(&entry.map_entry_value_field(), schemas);
        return json!({ "type": "object", "additionalProperties": values });
    }
    let single = match field.kind() {
        Kind::Double | Kind::Float => json!({ "type": "number" }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({ "type": "integer", "format": "int32" })
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX, "example": 1 })
        }
        // As protojson writes them; the example keeps Swagger UI's "string" out of a try-out.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({ "type": "string", "format": "int64", "example": "1" })
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({ "type": "string", "format": "uint64", "example": "1" })
        }
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "format": "byte" }),
        Kind::Enum(e) => {
            json!({ "type": "string", "enum": e.values().map(|v| v.name().to_string()).collect::<Vec<_>>() })
        }
        Kind::Message(m) => reference(&m, schemas),
    };
    if field.cardinality() == Cardinality::Repeated {
        json!({ "type": "array", "items": single })
    } else {
        single
    }
}

/// The error body every route answers with, as the gateway writes it.
fn status_schema() -> Json {
    json!({
        "type": "object",
        "description": "An error: the gRPC status code (3 InvalidArgument, 5 NotFound, 9 FailedPrecondition, 14 Unavailable, ...), its message, and details.",
        "properties": {
            "code": { "type": "integer", "format": "int32" },
            "message": { "type": "string" },
            "details": { "type": "array", "items": { "type": "object" } },
        },
    })
}

/// The leading comment of the element at `path` in `file`, trimmed; empty when it has none.
fn comment(file: &FileDescriptor, path: &[i32]) -> String {
    file.file_descriptor_proto()
        .source_code_info
        .as_ref()
        .and_then(|info| info.location.iter().find(|l| l.path == path))
        .and_then(|l| l.leading_comments.as_deref())
        .map(|c| {
            c.lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}
