//! The notifiers of the compose file are configured by variables the notifier reads.

use testkit::compose;

#[test]
fn every_notifier_variable_of_the_compose_files_configures_the_notifier() {
    for c in compose::FILES.map(compose::compose_file) {
        for i in 1..=3 {
            let env = compose::environment(&c, &format!("notifier-{i}"));
            let settings = notifier::config::Settings::load(
                &Default::default(),
                Some(env.clone().into_iter().collect()),
            )
            .unwrap();
            compose::assert_env_configures(
                "NOTIFIER_",
                &env,
                &serde_json::to_value(&settings).unwrap(),
            );
        }
    }
}
