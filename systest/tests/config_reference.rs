//! The configuration reference (`docs/configuration.md`) and the JSON Schemas of both services'
//! files (`docs/schema/`) are generated from the settings types: a stale file fails here, and
//! `make config-reference` rewrites them. Every flag sets the key the reference names, as its
//! environment variable does; the example files pass their schema and their service's loader;
//! every flag and variable the documentation names is accepted, and both services spell a
//! shared setting alike.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use serde_json::Value;
use service_runtime::reference::Reference;

/// Set to rewrite the generated files instead of comparing them.
const UPDATE: &str = "UPDATE_REFERENCE";

#[derive(Parser)]
struct LomsCli {
    #[command(flatten)]
    overrides: loms::config::Overrides,
}

/// The settings a service loads from these flags and this environment, serialized.
type Load = fn(&[String], &[(String, String)]) -> Result<Value, String>;

struct Service {
    name: &'static str,
    env_prefix: &'static str,
    schema: Value,
    flags: BTreeMap<String, String>,
    load: Load,
}

impl Service {
    fn schema_file(&self) -> PathBuf {
        root().join(format!("docs/schema/{}.schema.json", self.name))
    }

    fn example(&self) -> PathBuf {
        root().join(format!("deploy/config/{}.toml", self.name))
    }
}

fn root() -> PathBuf {
    testkit::stack::root().to_path_buf()
}

fn env_map(env: &[(String, String)]) -> Option<config::Map<String, String>> {
    Some(env.iter().cloned().collect())
}

fn services() -> [Service; 2] {
    let flags = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, f)| (k.to_string(), f.to_string()))
            .collect()
    };
    [
        Service {
            name: "loms",
            env_prefix: "LOMS",
            schema: serde_json::to_value(schemars::schema_for!(loms::config::Settings)).unwrap(),
            flags: flags(&loms::config::FLAGS),
            load: |args, env| {
                let cli =
                    LomsCli::try_parse_from(std::iter::once("loms".into()).chain(args.to_vec()))
                        .map_err(|e| e.to_string())?;
                let settings = loms::config::Settings::load(&cli.overrides, env_map(env))
                    .map_err(|e| e.to_string())?;
                Ok(serde_json::to_value(settings).unwrap())
            },
        },
        Service {
            name: "notifier",
            env_prefix: "NOTIFIER",
            schema: serde_json::to_value(schemars::schema_for!(notifier::config::Settings))
                .unwrap(),
            flags: flags(&notifier::config::FLAGS),
            load: |args, env| {
                let flags = notifier::config::Flags::try_parse_from(
                    std::iter::once("notifier".into()).chain(args.to_vec()),
                )
                .map_err(|e| e.to_string())?;
                let settings = notifier::config::Settings::load(&flags, env_map(env))
                    .map_err(|e| e.to_string())?;
                Ok(serde_json::to_value(settings).unwrap())
            },
        },
    ]
}

const PREAMBLE: &str = "# Configuration reference

Generated from the settings types by `make config-reference`; `make test` fails when it is stale.
Each service reads, later layers winning: its defaults, a TOML file (`--config FILE`), environment
variables (the service's prefix, nested keys joined by `__`), then flags. Unknown keys are refused
by name, in the file and in the environment. Durations are in milliseconds (`_ms`), sizes in
bytes. Editors complete and check the files with the JSON Schemas in `docs/schema/` (Taplo and
Even Better TOML read `.taplo.toml`); examples: `deploy/config/`.
";

#[test]
fn reference_and_schemas_are_current() {
    let services = services();
    let mut files = vec![(root().join("docs/configuration.md"), PREAMBLE.to_string())];
    for s in &services {
        let reference = Reference {
            service: s.name,
            env_prefix: s.env_prefix,
            schema: &s.schema,
            flags: &s.flags,
        };
        files[0].1.push('\n');
        files[0].1.push_str(&reference.markdown());
        let schema = serde_json::to_string_pretty(&s.schema).unwrap() + "\n";
        files.push((s.schema_file(), schema));
    }
    for (path, text) in files {
        if std::env::var_os(UPDATE).is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "{} is stale: run `make config-reference` and commit it",
            path.display()
        );
    }
}

/// A value the flag can take, and what its environment variable says for the same.
fn sample(key: &str) -> (Option<&'static str>, &'static str) {
    match key {
        "log.json" => (None, "true"),
        "kafka.properties" => (Some("acks=all"), "all"),
        k if k.ends_with("addr") => (Some("127.0.0.1:1"), "127.0.0.1:1"),
        "database.url" => (Some("postgres://x@db:1/x"), "postgres://x@db:1/x"),
        _ => (Some("sample"), "sample"),
    }
}

#[test]
fn every_flag_sets_the_key_the_reference_names() {
    for s in services() {
        let defaults = (s.load)(&[], &[]).unwrap();
        for (key, flag) in &s.flags {
            let (value, env_value) = sample(key);
            let args: Vec<String> = std::iter::once(flag.clone())
                .chain(value.map(str::to_string))
                .collect();
            let mut env_key = format!("{}_{}", s.env_prefix, key.to_uppercase().replace('.', "__"));
            if key == "kafka.properties" {
                env_key.push_str("__ACKS");
            }
            let by_flag = (s.load)(&args, &[]).unwrap_or_else(|e| panic!("{flag}: {e}"));
            let by_env = (s.load)(&[], &[(env_key.clone(), env_value.to_string())])
                .unwrap_or_else(|e| panic!("{env_key}: {e}"));
            assert_eq!(by_flag, by_env, "{} {flag} and {env_key}", s.name);
            if key != "database.url" {
                // (a secret serializes as a marker, whatever its value)
                assert_ne!(by_flag, defaults, "{} {flag} changes nothing", s.name);
            }
        }
    }
}

#[test]
fn example_files_pass_their_schema_and_their_service() {
    for s in services() {
        let text = std::fs::read_to_string(s.example()).unwrap();
        let file: toml::Table = toml::from_str(&text).unwrap();
        let file = serde_json::to_value(file).unwrap();
        let validator = jsonschema::validator_for(&s.schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&file)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", s.example().display());
        let args = vec!["--config".to_string(), s.example().display().to_string()];
        (s.load)(&args, &[]).unwrap_or_else(|e| panic!("{}: {e}", s.example().display()));

        let mut typo = file.clone();
        typo["no_such_key"] = Value::from(1);
        assert!(
            !validator.is_valid(&typo),
            "the schema refuses unknown keys"
        );
    }
}

/// Flags the documentation names that belong to other programs (make's bench and chaos
/// arguments, prlimit), not to either service.
const OTHER_PROGRAMS_FLAGS: [&str; 4] = ["--quick", "--event-path", "--check", "--nofile"];

/// Every long flag of a clap command and its subcommands, hidden (old) names included.
fn long_flags(command: &clap::Command) -> Vec<String> {
    let mut flags: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    for sub in command.get_subcommands() {
        flags.extend(long_flags(sub));
    }
    flags
}

/// Whether `path` (keys from the root) is a key of `schema`; below a map (`kafka.properties`)
/// any key is.
fn schema_has(schema: &Value, path: &[String]) -> bool {
    let definitions = &schema["$defs"];
    let mut node = schema;
    for key in path {
        if let Some(reference) = node["$ref"].as_str() {
            node = &definitions[reference.trim_start_matches("#/$defs/")];
        }
        match node["properties"].get(key) {
            Some(next) => node = next,
            None => return node["additionalProperties"].is_object(),
        }
    }
    true
}

/// The prose pages a user reads (the generated reference is checked above).
fn documentation() -> Vec<(PathBuf, String)> {
    let mut pages = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") && !path.ends_with("configuration.md") {
            pages.push(path);
        }
    }
    pages
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

fn tokens<'a>(text: &'a str, starts: &'a [&str]) -> impl Iterator<Item = &'a str> + 'a {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .filter(move |t| starts.iter().any(|s| t.starts_with(s)))
}

/// Every flag and environment variable the README and the docs name is one that a service
/// accepts (or, for a compose variable, one that a compose file reads).
#[test]
fn every_flag_and_variable_the_documentation_names_is_accepted() {
    use clap::CommandFactory;
    let mut flags = long_flags(&loms::cli::Cli::command());
    flags.extend(long_flags(&notifier::config::Flags::command()));
    let compose: String = [
        "docker-compose.yml",
        "docker-compose.replicated.yml",
        "docker-compose.secure.yml",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(root().join("deploy").join(f)).unwrap())
    .collect();
    let services = services();
    let mut unknown = Vec::new();
    for (page, text) in documentation() {
        let page = page.strip_prefix(root()).unwrap().display().to_string();
        for flag in tokens(text.as_str(), &["--"]) {
            let named = flag.as_bytes().get(2).is_some_and(u8::is_ascii_lowercase);
            if named && !flags.iter().any(|f| f == flag) && !OTHER_PROGRAMS_FLAGS.contains(&flag) {
                unknown.push(format!("{page}: {flag}"));
            }
        }
        for variable in tokens(text.as_str(), &["LOMS_", "NOTIFIER_"]) {
            let service = services
                .iter()
                .find(|s| variable.starts_with(&format!("{}_", s.env_prefix)))
                .unwrap();
            let path: Vec<String> = variable[service.env_prefix.len() + 1..]
                .split("__")
                .filter(|k| !k.is_empty())
                .map(str::to_lowercase)
                .collect();
            let read_by_compose = compose.contains(&format!("${{{variable}"));
            if !read_by_compose && !schema_has(&service.schema, &path) {
                unknown.push(format!("{page}: {variable}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "named in the documentation, accepted by nothing: {unknown:#?}"
    );
}

/// A setting both services have is spelled alike in both: the same key takes the same flag.
#[test]
fn both_services_spell_shared_settings_alike() {
    let [loms, notifier] = services();
    let shared: Vec<&String> = loms
        .flags
        .keys()
        .filter(|k| notifier.flags.contains_key(*k))
        .collect();
    for key in [
        "admin_addr",
        "kafka.brokers",
        "kafka.topic",
        "kafka.properties",
        "log.json",
    ] {
        assert!(shared.iter().any(|k| *k == key), "{key} is a flag of both");
    }
    for key in shared {
        assert_eq!(loms.flags[key], notifier.flags[key], "{key}");
    }
}
