//! The configuration reference of a service, generated from its settings type's JSON Schema
//! (schemars: the doc comments are the descriptions, `Default` gives the defaults): one row per
//! key of its file, with the key's type, default, environment variable and flag.

use std::collections::BTreeMap;

use serde_json::Value;

/// What one service's reference is made of.
pub struct Reference<'a> {
    pub service: &'a str,
    /// The environment variables' prefix, e.g. `LOMS`.
    pub env_prefix: &'a str,
    /// The JSON Schema of its settings (`schemars::schema_for!`).
    pub schema: &'a Value,
    /// Flag by key, for the keys a flag sets.
    pub flags: &'a BTreeMap<String, String>,
}

/// One key: its dotted name and its schema, with `$ref`s followed.
struct Key<'a> {
    name: String,
    schema: &'a Value,
    default: Option<&'a Value>,
}

impl Reference<'_> {
    /// The reference as a Markdown section: a table of every key.
    pub fn markdown(&self) -> String {
        let mut keys = Vec::new();
        self.collect(self.schema, "", &mut keys);
        let mut out = format!(
            "## {}\n\n{}\n\n| key | type | default | environment | flag | what it is |\n|---|---|---|---|---|---|\n",
            self.service,
            self.describe(self.schema)
        );
        for key in keys {
            let env = format!(
                "{}_{}",
                self.env_prefix,
                key.name.to_uppercase().replace('.', "__")
            );
            let flag = self
                .flags
                .get(&key.name)
                .map(|f| format!("`{f}`"))
                .unwrap_or_default();
            out.push_str(&format!(
                "| `{}` | {} | {} | `{env}` | {flag} | {} |\n",
                key.name,
                self.type_of(key.schema),
                key.default.map(default_text).unwrap_or_default(),
                self.describe(key.schema).replace('|', "\\|"),
            ));
        }
        out
    }

    /// A `$ref` followed to its definition; any other schema as it is.
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(path) => self
                .schema
                .pointer(path.trim_start_matches('#'))
                .unwrap_or(schema),
            None => schema,
        }
    }

    /// The object a property holds, when it is a table of keys of its own (not a free map).
    fn table<'s>(&'s self, schema: &'s Value) -> Option<&'s Value> {
        let schema = self.resolve(schema);
        let candidates = schema
            .get("anyOf")
            .and_then(Value::as_array)
            .map(|v| v.iter().collect::<Vec<_>>())
            .unwrap_or_else(|| vec![schema]);
        candidates
            .into_iter()
            .map(|s| self.resolve(s))
            .find(|s| s.get("properties").is_some())
    }

    fn collect<'s>(&'s self, object: &'s Value, prefix: &str, keys: &mut Vec<Key<'s>>) {
        let Some(properties) = object.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (name, schema) in properties {
            let name = format!("{prefix}{name}");
            match self.table(schema) {
                Some(table) => self.collect(table, &format!("{name}."), keys),
                None => keys.push(Key {
                    name,
                    schema,
                    default: schema.get("default"),
                }),
            }
        }
    }

    fn type_of(&self, schema: &Value) -> String {
        let schema = self.resolve(schema);
        if schema.get("additionalProperties").is_some() {
            return "table of strings".into();
        }
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let optional = types.contains(&"null");
        let main = types
            .iter()
            .find(|t| **t != "null")
            .copied()
            .unwrap_or("any");
        let main = match (main, schema.get("format").and_then(Value::as_str)) {
            ("integer", Some(format)) => format.to_string(),
            (main, _) => main.to_string(),
        };
        if optional {
            format!("{main}, optional")
        } else {
            main
        }
    }

    fn describe(&self, schema: &Value) -> String {
        let own = schema.get("description").and_then(Value::as_str);
        let own = own.or_else(|| {
            self.resolve(schema)
                .get("description")
                .and_then(Value::as_str)
        });
        own.unwrap_or_default().replace('\n', " ")
    }
}

/// A default as it would be written in the TOML file.
fn default_text(value: &Value) -> String {
    match value {
        Value::Null => "none".into(),
        Value::Object(map) if map.is_empty() => "empty".into(),
        other => format!("`{other}`"),
    }
}
