//! The notifiers of the compose file are configured by variables the notifier reads.

use testkit::compose;

#[test]
fn every_notifier_variable_of_the_compose_files_configures_the_notifier() {
    let files = compose::FILES.map(compose::compose_file);
    for i in 1..=3 {
        let name = format!("notifier-{i}");
        let envs = files
            .iter()
            .map(|c| compose::environment(c, &name))
            .chain([compose::secure_environment(&name)]);
        for env in envs {
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
