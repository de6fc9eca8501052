//! Static checks of the compose deployment: there is no Docker engine where the tests run.

use serde_json::{json, Value};
use testkit::compose::{self, assert_env_configures, environment, read};

/// Both files: Jaeger takes OTLP on 4318 and serves its UI on 16686; loms and every notifier
/// export their spans to it, under their own service names.
#[test]
fn services_export_their_traces_to_jaeger() {
    for file in compose::FILES {
        let c = compose::compose_file(file);
        assert_eq!(
            c["services"]["jaeger"]["ports"],
            json!(["16686:16686", "4318:4318"]),
            "{file}"
        );
        let services = ["loms", "notifier-1", "notifier-2", "notifier-3"];
        for service in services {
            let env = environment(&c, service);
            assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://jaeger:4318");
            let name = service.split('-').next().unwrap();
            assert_eq!(env["OTEL_SERVICE_NAME"], name, "{file}: {service}");
        }
    }
}

#[test]
fn compose_files_follow_the_compose_specification() {
    let schema: Value = serde_json::from_str(&read("deploy/schema/compose-spec.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    for file in compose::FILES {
        let compose = compose::compose_file(file);
        let errors: Vec<String> = validator
            .iter_errors(&compose)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{file}: {errors:#?}");
    }
}

/// The replicated file: three brokers and three KRaft controllers, the topic replicated three
/// times with two in-sync replicas required, and every client pointed at all three brokers.
/// Every broker depends on every controller, so that compose stops the brokers first (each
/// controlled shutdown approved by a quorum still there) and the controllers after them.
#[test]
fn replicated_topology() {
    let c = compose::compose_file(compose::FILES[1]);
    let nodes = ["kafka", "kafka-2", "kafka-3"];
    let controllers = [
        "kafka-controller-1",
        "kafka-controller-2",
        "kafka-controller-3",
    ];
    let voters =
        "101@kafka-controller-1:9093,102@kafka-controller-2:9093,103@kafka-controller-3:9093";
    let all = "kafka:29092,kafka-2:29092,kafka-3:29092";
    let cluster = environment(&c, "kafka")["CLUSTER_ID"].clone();
    for (i, controller) in controllers.iter().enumerate() {
        let env = environment(&c, controller);
        assert_eq!(env["KAFKA_NODE_ID"], (101 + i).to_string(), "{controller}");
        assert_eq!(env["KAFKA_PROCESS_ROLES"], "controller");
        assert_eq!(env["KAFKA_CONTROLLER_QUORUM_VOTERS"], voters);
        assert_eq!(env["CLUSTER_ID"], cluster);
        // The cluster-wide default comes from the controllers: the same as the brokers'.
        assert_eq!(env["KAFKA_MIN_INSYNC_REPLICAS"], "2", "{controller}");
        // The image refuses to start a controller that advertises listeners.
        assert!(
            !env.contains_key("KAFKA_ADVERTISED_LISTENERS"),
            "{controller}"
        );
    }
    for (i, node) in nodes.iter().enumerate() {
        let env = environment(&c, node);
        assert_eq!(env["KAFKA_NODE_ID"], (i + 1).to_string(), "{node}");
        assert_eq!(env["KAFKA_PROCESS_ROLES"], "broker");
        assert_eq!(env["KAFKA_CONTROLLER_QUORUM_VOTERS"], voters);
        assert_eq!(env["CLUSTER_ID"], cluster);
        assert!(env["KAFKA_ADVERTISED_LISTENERS"].contains(&format!("{node}:29092")));
        assert_eq!(env["KAFKA_MIN_INSYNC_REPLICAS"], "2");
        assert_eq!(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"], "3");
        for controller in controllers {
            assert_eq!(
                c["services"][node]["depends_on"][controller]["condition"], "service_healthy",
                "{node} after {controller}"
            );
        }
        assert_eq!(
            c["services"]["kafka-init"]["depends_on"][node]["condition"],
            "service_healthy"
        );
    }
    let init = environment(&c, "kafka-init");
    assert_eq!(init["REPLICATION_FACTOR"], "3");
    assert_eq!(init["MIN_INSYNC_REPLICAS"], "2");
    assert_eq!(init["KAFKA_BOOTSTRAP"], all);
    assert_eq!(environment(&c, "loms")["LOMS_KAFKA__BROKERS"], all);
    for i in 1..=3 {
        assert_eq!(
            environment(&c, &format!("notifier-{i}"))["NOTIFIER_KAFKA__BROKERS"],
            all
        );
    }
    let ui_mount = c["services"]["kafka-ui"]["volumes"][0].as_str().unwrap();
    let ui_file = ui_mount.split(':').next().unwrap().trim_start_matches("./");
    let ui: Value = serde_yaml_ng::from_str(&read(&format!("deploy/{ui_file}"))).unwrap();
    assert_eq!(ui["kafka"]["clusters"][0]["bootstrapServers"], all);
}

#[test]
fn topology() {
    let c = compose::compose();
    let services = c["services"].as_object().unwrap();
    let mut names: Vec<&str> = services.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grafana",
            "jaeger",
            "kafka",
            "kafka-init",
            "kafka-ui",
            "loms",
            "loms-migrate",
            "notifier-1",
            "notifier-2",
            "notifier-3",
            "postgres",
            "prometheus"
        ]
    );

    // Kafka: the version the local stack runs, KRaft, a listener for containers and one for the host.
    let stack = read("deploy/local/stack.sh");
    let version = stack
        .lines()
        .find_map(|l| l.strip_prefix("KAFKA_VERSION=${KAFKA_VERSION:-"))
        .unwrap()
        .trim_end_matches('}');
    assert_eq!(
        c["services"]["kafka"]["image"],
        format!("apache/kafka:{version}")
    );
    let kafka = environment(&c, "kafka");
    assert_eq!(kafka["KAFKA_PROCESS_ROLES"], "broker,controller");
    // The host ports are configurable (a local stack may hold the defaults): the advertised
    // address follows the mapping.
    assert!(kafka["KAFKA_ADVERTISED_LISTENERS"].contains("localhost:${LOMS_KAFKA_PORT:-9092}"));
    assert!(kafka["KAFKA_ADVERTISED_LISTENERS"].contains("kafka:29092"));
    assert_eq!(
        c["services"]["kafka"]["ports"],
        json!(["${LOMS_KAFKA_PORT:-9092}:9092"])
    );
    assert_eq!(
        c["services"]["postgres"]["ports"],
        json!(["${LOMS_PG_PORT:-5432}:5432"])
    );
    assert!(c["services"]["kafka"]["healthcheck"]["test"]
        .to_string()
        .contains("kafka-broker-api-versions.sh"));
    // Over TCP: the image's temporary init server listens only on the Unix socket.
    assert!(c["services"]["postgres"]["healthcheck"]["test"]
        .to_string()
        .contains("pg_isready -h 127.0.0.1"));
    assert!(c["services"]["postgres"]["volumes"][0]
        .as_str()
        .unwrap()
        .starts_with("postgres-data:"));

    // kafka-init runs the script the local stack runs, which makes the topic 2 × 1.
    let init = &c["services"]["kafka-init"];
    assert_eq!(init["image"], c["services"]["kafka"]["image"]);
    assert_eq!(init["command"], json!(["bash", "/deploy/kafka-init.sh"]));
    assert_eq!(
        init["volumes"],
        json!(["./kafka-init.sh:/deploy/kafka-init.sh:ro"])
    );
    assert_eq!(init["depends_on"]["kafka"]["condition"], "service_healthy");
    assert_eq!(
        environment(&c, "kafka-init")["ORDER_EVENTS_TOPIC"],
        events_proto::TOPIC
    );
    let script = read("deploy/kafka-init.sh");
    assert!(script.contains(r#"ensure_topic "${ORDER_EVENTS_TOPIC:-loms.order-events}" 2"#));
    // Replication factor 1 unless the environment asks for more (the three-node file does).
    assert!(script.contains("replication=${REPLICATION_FACTOR:-1}"));
    assert!(!environment(&c, "kafka-init").contains_key("REPLICATION_FACTOR"));
    assert!(
        stack.contains("kafka-init.sh"),
        "the local stack runs the same init script"
    );

    // kafka-ui decodes the order events with our .proto files.
    let ui = &c["services"]["kafka-ui"];
    assert!(ui["image"]
        .as_str()
        .unwrap()
        .starts_with("provectuslabs/kafka-ui:"));
    assert_eq!(ui["ports"], json!(["8080:8080"]));
    let ui_config: Value = serde_yaml_ng::from_str(&read("deploy/kafka-ui/config.yml")).unwrap();
    let cluster = &ui_config["kafka"]["clusters"][0];
    assert_eq!(cluster["bootstrapServers"], "kafka:29092");
    assert_eq!(cluster["serde"][0]["name"], "ProtobufFile");
    let serde = &cluster["serde"][0]["properties"];
    assert_eq!(
        serde["protobufMessageNameByTopic"][events_proto::TOPIC],
        events_proto::MESSAGE_TYPE
    );
    let mounts: Vec<&str> = ui["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let proto_dir = serde["protobufFilesDir"].as_str().unwrap();
    let proto_mount = mounts
        .iter()
        .find(|m| m.split(':').nth(1) == Some(proto_dir))
        .expect("the proto folder is mounted");
    assert_eq!(proto_mount.split(':').next(), Some("../events-proto/proto"));
    let proto = read("events-proto/proto/loms/events/v1/order_event.proto");
    assert!(proto.contains("package loms.events.v1;") && proto.contains("message OrderEvent {"));
    let config_mount = mounts
        .iter()
        .find(|m| m.starts_with("./kafka-ui/config.yml:"))
        .expect("config mounted");
    let config_path = config_mount.split(':').nth(1).unwrap();
    assert_eq!(
        environment(&c, "kafka-ui")["SPRING_CONFIG_ADDITIONAL-LOCATION"],
        config_path
    );

    // loms: both ports, after a healthy database and a finished init.
    let loms = &c["services"]["loms"];
    assert_eq!(
        loms["ports"],
        json!(["8083:8083", "8084:8084", "8085:8085"])
    );
    assert_eq!(environment(&c, "loms")["LOMS_ADMIN_ADDR"], "0.0.0.0:8085");
    assert_eq!(
        loms["depends_on"]["postgres"]["condition"],
        "service_healthy"
    );
    assert_eq!(
        loms["depends_on"]["kafka-init"]["condition"],
        "service_completed_successfully"
    );
    assert_eq!(loms["image"], "loms:local");
    // The migrations run once, as a job of their own, before it.
    assert_eq!(
        loms["depends_on"]["loms-migrate"]["condition"],
        "service_completed_successfully"
    );
    assert_eq!(
        environment(&c, "loms")["LOMS_DATABASE__MIGRATE_ON_START"],
        "false"
    );
    let migrate = &c["services"]["loms-migrate"];
    assert_eq!(migrate["command"], json!(["migrate"]));
    assert_eq!(migrate["build"]["target"], "loms");
    assert_eq!(migrate["image"], "loms:local");
    assert_eq!(
        environment(&c, "loms-migrate")["LOMS_DATABASE__URL"],
        environment(&c, "loms")["LOMS_DATABASE__URL"]
    );

    for i in 1..=3 {
        let name = format!("notifier-{i}");
        let n = &c["services"][&name];
        assert_eq!(n["container_name"], name);
        assert_eq!(n["image"], "loms-notifier:local");
        assert_eq!(
            n["depends_on"]["kafka-init"]["condition"],
            "service_completed_successfully"
        );
        assert_eq!(
            environment(&c, &name)["NOTIFIER_KAFKA__GROUP_ID"],
            "notifier"
        );
    }
}

/// Both files: each of our images is built by one service and run by the others under its tag,
/// not built again for each (compose leaves the pull of a tag another service builds).
#[test]
fn each_image_is_built_once() {
    for file in compose::FILES {
        let c = compose::compose_file(file);
        let services = c["services"].as_object().unwrap();
        for (image, target, users) in [
            ("loms:local", "loms", 2),
            ("loms-notifier:local", "notifier", 3),
        ] {
            let running: Vec<&Value> = services.values().filter(|s| s["image"] == image).collect();
            let building: Vec<&&Value> = running.iter().filter(|s| !s["build"].is_null()).collect();
            assert_eq!(running.len(), users, "{file}: services running {image}");
            assert_eq!(building.len(), 1, "{file}: services building {image}");
            assert_eq!(building[0]["build"]["target"], target, "{file}");
        }
        let builds = services.values().filter(|s| !s["build"].is_null()).count();
        assert_eq!(builds, 2, "{file}: nothing else is built");
    }
}

#[test]
fn every_loms_variable_of_the_compose_files_configures_loms() {
    for (file, service) in compose::FILES
        .iter()
        .flat_map(|f| ["loms", "loms-migrate"].map(|s| (f, s)))
    {
        let env = environment(&compose::compose_file(file), service);
        let settings = loms::config::Settings::load(
            &Default::default(),
            Some(env.clone().into_iter().collect()),
        )
        .unwrap();
        assert_env_configures("LOMS_", &env, &serde_json::to_value(&settings).unwrap());
    }
    let env = environment(&compose::compose(), "loms");
    let settings =
        loms::config::Settings::load(&Default::default(), Some(env.clone().into_iter().collect()))
            .unwrap();
    // The database URL is a secret, serialized as a marker: its value is checked here.
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&settings.database.url),
        env["LOMS_DATABASE__URL"]
    );
}

#[test]
fn dockerfile_builds_both_binaries_as_a_non_root_user() {
    let dockerfile = read("deploy/Dockerfile");
    assert!(dockerfile.contains("AS loms") && dockerfile.contains("AS notifier"));
    assert!(dockerfile.contains("USER app"));
    assert!(read(".dockerignore").lines().any(|l| l == "target"));
}

/// The secure override: it follows the specification; every service that reads the volume
/// `certs` waits for the job that fills it (itself or through what it depends on); no client
/// listener of Kafka is plaintext; PostgreSQL takes TLS only; and every variable it gives loms
/// and the notifiers configures them.
#[test]
fn the_secure_override() {
    let schema: Value = serde_json::from_str(&read("deploy/schema/compose-spec.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let secure = compose::compose_file(compose::SECURE);
    let errors: Vec<String> = validator
        .iter_errors(&secure)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    let base = compose::compose();
    let depends = |service: &str| -> Vec<String> {
        let mut names = Vec::new();
        for file in [&base, &secure] {
            if let Some(map) = file["services"][service]["depends_on"].as_object() {
                names.extend(map.keys().cloned());
            }
        }
        names
    };
    fn after_certs(service: &str, depends: &dyn Fn(&str) -> Vec<String>) -> bool {
        depends(service)
            .iter()
            .any(|d| d == "certs" || after_certs(d, depends))
    }
    let services = secure["services"].as_object().unwrap();
    for (name, service) in services {
        let mounts = service["volumes"].to_string();
        if name != "certs" && mounts.contains("certs:/certs") {
            assert!(
                after_certs(name, &depends),
                "{name} reads the certificates before they are made"
            );
        }
    }
    assert_eq!(secure["services"]["certs"]["build"]["target"], "certs");
    assert!(read("deploy/Dockerfile").contains("AS certs"));

    let kafka = compose::secure_environment("kafka");
    let map = &kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"];
    for listener in map.split(',') {
        let (name, protocol) = listener.split_once(':').unwrap();
        assert!(
            name == "CONTROLLER" || protocol == "SASL_SSL",
            "{name} is {protocol}"
        );
    }
    assert!(kafka["KAFKA_ADVERTISED_LISTENERS"]
        .split(',')
        .all(|l| !l.starts_with("CONTROLLER")));
    let pg = secure["services"]["postgres"]["command"].to_string();
    assert!(pg.contains("ssl=on") && pg.contains("hba_file="), "{pg}");
    let hba = read("deploy/secure/pg_hba.conf");
    assert!(
        hba.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .all(|l| l.starts_with("local") || l.starts_with("hostssl")),
        "{hba}"
    );

    for service in ["loms", "loms-migrate"] {
        let env = compose::secure_environment(service);
        let settings = loms::config::Settings::load(
            &Default::default(),
            Some(env.clone().into_iter().collect()),
        )
        .unwrap();
        assert_env_configures("LOMS_", &env, &serde_json::to_value(&settings).unwrap());
        assert_eq!(env["LOMS_DATABASE__TLS__MODE"], "verify-full");
    }
    let loms = compose::secure_environment("loms");
    assert_eq!(loms["LOMS_KAFKA__SECURITY__PROTOCOL"], "SASL_SSL");
    assert!(loms.contains_key("LOMS_TLS__CERT_FILE"));
    assert!(loms["OTEL_EXPORTER_OTLP_ENDPOINT"].starts_with("https://"));
}
