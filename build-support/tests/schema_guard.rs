//! The schema guard: today's protos against the committed snapshots, and the guard itself,
//! rule by rule, on deliberately broken copies of the protos.

use std::path::{Path, PathBuf};

use build_support::schema::{self, Rule, RELEASED};
use prost_reflect::DescriptorPool;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `text` compiled as `name`, its imports found beside the API's protos.
fn compile_text(name: &str, text: &str) -> DescriptorPool {
    schema::compile_text(name, text, &root().join(RELEASED[API].root))
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn todays_protos_keep_every_reader_of_the_released_schemas() {
    for released in RELEASED {
        let snapshot = std::fs::read_to_string(root().join(released.snapshot)).unwrap();
        let old = schema::from_snapshot(&snapshot).unwrap();
        let new = schema::compile(&root().join(released.root), &[released.file]).unwrap();
        let breaks = schema::breaking_changes(&old, &new, released.package);
        assert!(
            breaks.is_empty(),
            "{} breaks its released schema ({}):\n{}",
            released.file,
            released.snapshot,
            breaks
                .iter()
                .map(|b| format!("  {b}\n"))
                .collect::<String>()
        );
    }
}

#[test]
fn the_snapshot_round_trips() {
    let released = &RELEASED[1];
    let pool = schema::compile(&root().join(released.root), &[released.file]).unwrap();
    let text = schema::to_snapshot(&pool).unwrap();
    let back = schema::from_snapshot(&text).unwrap();
    assert_eq!(schema::to_snapshot(&back).unwrap(), text);
    assert!(back
        .get_message_by_name("loms.events.v1.OrderEvent")
        .is_some());
}

/// The released proto of `released`, as text.
fn proto(index: usize) -> (String, &'static str, &'static str) {
    let released = &RELEASED[index];
    let text = std::fs::read_to_string(root().join(released.root).join(released.file)).unwrap();
    (text, released.file, released.package)
}

/// The rules broken by replacing `from` with `to` (everywhere) in a released proto.
fn broken_by(index: usize, from: &str, to: &str) -> Vec<Rule> {
    let (text, file, package) = proto(index);
    assert!(text.contains(from), "{from:?} is not in {file}");
    let old = compile_text(file, &text);
    let new = compile_text(file, &text.replace(from, to));
    let breaks = schema::breaking_changes(&old, &new, package);
    for b in &breaks {
        println!("{b}");
    }
    breaks.into_iter().map(|b| b.rule).collect()
}

const API: usize = 0;
const EVENTS: usize = 1;

#[test]
fn removing_a_field_needs_its_number_and_name_reserved() {
    let removed = "  int64 user_id = 6;\n";
    assert_eq!(broken_by(EVENTS, removed, ""), [Rule::FieldRemoved]);
    let number_only = "  reserved 6;\n";
    assert_eq!(
        broken_by(EVENTS, removed, number_only),
        [Rule::FieldRemoved]
    );
    let both = "  reserved 6;\n  reserved \"user_id\";\n";
    assert_eq!(broken_by(EVENTS, removed, both), []);
}

#[test]
fn numbers_types_cardinality_and_names_are_fixed() {
    let field = "int64 user_id = 6;";
    assert_eq!(
        broken_by(EVENTS, field, "int64 user_id = 10;"),
        [Rule::FieldRenumbered]
    );
    assert_eq!(
        broken_by(EVENTS, field, "string user_id = 6;"),
        [Rule::FieldTypeChanged]
    );
    assert_eq!(
        broken_by(EVENTS, field, "repeated int64 user_id = 6;"),
        [Rule::FieldCardinalityChanged]
    );
    assert_eq!(
        broken_by(EVENTS, field, "optional int64 user_id = 6;"),
        [Rule::FieldCardinalityChanged]
    );
    assert_eq!(
        broken_by(
            EVENTS,
            "map<string, string> metadata = 5;",
            "repeated Item metadata = 5;"
        ),
        [Rule::FieldTypeChanged, Rule::FieldCardinalityChanged]
    );
    assert_eq!(
        broken_by(EVENTS, field, "int64 customer_id = 6;"),
        [Rule::FieldRenamed, Rule::FieldJsonNameChanged]
    );
    assert_eq!(
        broken_by(EVENTS, field, "int64 user_id = 6 [json_name = \"user\"];"),
        [Rule::FieldJsonNameChanged]
    );
    assert_eq!(
        broken_by(EVENTS, field, "oneof who { int64 user_id = 6; }"),
        [Rule::FieldOneofChanged]
    );
}

#[test]
fn messages_packages_services_and_rpcs_stay_where_they_are() {
    // Renamed, with the field that refers to it.
    assert_eq!(
        broken_by(EVENTS, "Item", "Line"),
        [Rule::FieldTypeChanged, Rule::MessageRemoved]
    );
    let moved = broken_by(EVENTS, "package loms.events.v1;", "package loms.events.v2;");
    assert!(moved.contains(&Rule::FileMoved) && moved.contains(&Rule::MessageRemoved));
    assert_eq!(
        broken_by(API, "service Loms {", "service Orders {"),
        [Rule::ServiceRemoved]
    );
    let rpc = "rpc OrderPay(OrderPayRequest) returns (OrderPayResponse)";
    assert_eq!(
        broken_by(
            API,
            rpc,
            "rpc PayOrder(OrderPayRequest) returns (OrderPayResponse)"
        ),
        [Rule::RpcRemoved]
    );
    assert_eq!(
        broken_by(
            API,
            rpc,
            "rpc OrderPay(OrderInfoRequest) returns (OrderPayResponse)"
        ),
        [Rule::RpcTypeChanged]
    );
    assert_eq!(
        broken_by(
            API,
            rpc,
            "rpc OrderPay(stream OrderPayRequest) returns (OrderPayResponse)"
        ),
        [Rule::RpcTypeChanged]
    );
}

/// Rules about enums and reservations, on a proto of the test's own (ours have no enum).
const WITH_ENUM: &str = r#"syntax = "proto3";
package loms.test.v1;
enum Kind {
  KIND_UNSPECIFIED = 0;
  KIND_PAID = 1;
  reserved 7;
  reserved "KIND_OLD";
}
message Holder {
  Kind kind = 1;
  reserved 9;
  reserved "gone";
}
"#;

fn enum_breaks(from: &str, to: &str) -> Vec<Rule> {
    assert!(WITH_ENUM.contains(from));
    let old = compile_text("test.proto", WITH_ENUM);
    let new = compile_text("test.proto", &WITH_ENUM.replace(from, to));
    schema::breaking_changes(&old, &new, "loms.test.v1")
        .into_iter()
        .map(|b| b.rule)
        .collect()
}

#[test]
fn enums_and_reservations() {
    assert_eq!(
        enum_breaks("  KIND_PAID = 1;\n", ""),
        [Rule::EnumValueRemoved]
    );
    assert_eq!(
        enum_breaks(
            "  KIND_PAID = 1;\n",
            "  reserved 1;\n  reserved \"KIND_PAID\";\n"
        ),
        []
    );
    assert_eq!(
        enum_breaks("KIND_PAID = 1;", "KIND_PAYED = 1;"),
        [Rule::EnumValueRenamed]
    );
    // Renamed, with the field that refers to it.
    assert_eq!(
        enum_breaks("Kind ", "Sort "),
        [Rule::FieldTypeChanged, Rule::EnumRemoved]
    );
    assert_eq!(
        enum_breaks("  reserved 9;\n", "  int64 nine = 9;\n"),
        [Rule::ReservedNumberReused]
    );
    assert_eq!(
        enum_breaks("  reserved \"gone\";\n", "  int64 gone = 10;\n"),
        [Rule::ReservedNameReused]
    );
    assert_eq!(
        enum_breaks("  reserved 7;\n", "  KIND_SEVEN = 7;\n"),
        [Rule::ReservedNumberReused]
    );
}

#[test]
fn additions_pass() {
    let added_field = "  repeated Item items = 9;\n  string channel = 10;\n";
    assert_eq!(
        broken_by(EVENTS, "  repeated Item items = 9;\n", added_field),
        []
    );
    let added_message = "message Item {";
    assert_eq!(
        broken_by(
            EVENTS,
            added_message,
            "message Note {\n  string text = 1;\n}\n\nmessage Item {"
        ),
        []
    );
    let rpc = "  rpc StocksInfo(";
    let added_rpc =
        format!("  rpc OrderList(OrderInfoRequest) returns (OrderInfoResponse);\n{rpc}");
    assert_eq!(broken_by(API, rpc, &added_rpc), []);
    assert_eq!(
        enum_breaks("  KIND_PAID = 1;\n", "  KIND_PAID = 1;\n  KIND_NEW = 2;\n"),
        []
    );
}
