use super::*;

const HOST: HostResources = HostResources {
    cpu_millis: 2000,
    memory_bytes: 4 << 30,
};

fn check(text: &str) -> Result<Config, ConfigError> {
    RawConfig::parse(text, "test.toml")?.validate(HOST)
}

const MINIMAL: &str = r#"
[node]
cookie = "secret-cookie"
data_dir = "/tmp/hodei-test"
"#;

#[test]
fn the_documented_example_is_valid() {
    let text = include_str!("../hodei.example.toml");
    let c = check(text).expect("example config validates");
    assert_eq!(c.pools.len(), 4);
    assert_eq!(c.pools[0].template.slots, 4);
    assert_eq!(c.pools[2].providers, ["docker"]);
    assert_eq!(
        c.providers["docker"].kind,
        hodei_runtime::ProviderKind::Docker
    );
    assert_eq!(c.agents.heartbeat_interval_ms, 1000);
    let profiles = &c.scheduler.pipeline.profiles;
    assert_eq!(
        profiles.keys().map(String::as_str).collect::<Vec<_>>(),
        ["default", "hpc", "shared"]
    );
    let ci = &c.scheduler.pipeline.quotas[&hodei_runtime::TenantId::new("ci").unwrap()];
    assert_eq!(ci.max_running_jobs, Some(20));
    assert_eq!(ci.max_cpu_millis, Some(16_000));
    assert_eq!(ci.max_memory_bytes, Some(32 << 30));
    assert_eq!(
        c.pools[1].template.taints[0].to_string(),
        "tier=burst:NoSchedule"
    );
}

#[test]
fn bad_scheduler_profiles_quotas_and_taints_name_the_field() {
    let e = check(&format!(
        "{MINIMAL}\n[scheduler.profiles.default]\nqueue = \"lifo\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("lifo"), "{e}");
    let e = check(&format!(
        "{MINIMAL}\n[scheduler.profiles.default]\npercentage_of_workers_to_score = 300\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("scheduler.profiles.default.percentage_of_workers_to_score")
            && e.contains("300"),
        "{e}"
    );
    let e = check(&format!(
        "{MINIMAL}\n[quotas.tenants.ci]\nmax_cpu = \"lots\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("quotas.tenants.ci.max_cpu") && e.contains("lots"),
        "{e}"
    );
    let e = check(&format!(
        "{MINIMAL}\n[[pools]]\nname = \"p\"\n[pools.template]\ntaints = [\"gpu=yes:Sometimes\"]\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("pools[0].template.taints[0]") && e.contains("Sometimes"),
        "{e}"
    );
}

#[test]
fn defaults_fill_a_minimal_file() {
    let c = check(MINIMAL).unwrap();
    assert_eq!(c.node.listen.to_string(), DEV_LISTEN);
    assert_eq!(c.jobs.log_cap_bytes, 10 << 20);
    assert_eq!(c.node.max_message_bytes, 4 << 20);
    assert!(c.pools.is_empty());
    assert_eq!(c.agents.work_dir, PathBuf::from("/tmp/hodei-test/work"));
}

#[test]
fn unknown_fields_are_refused_with_their_name() {
    let e = check(&format!("{MINIMAL}\n[jobs]\nretension = \"1h\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("retension"), "{e}");
}

#[test]
fn a_bad_value_names_field_value_and_reason() {
    let e = check(&format!(
        "{MINIMAL}\n[[pools]]\nname = \"p\"\nmin = 5\nmax = 2\n"
    ))
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "invalid config: pools[0].min = \"5\": greater than max (2)"
    );
    let e = check(&format!("{MINIMAL}\n[agents]\nlease = \"soon\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("agents.lease") && e.contains("soon") && e.contains("duration"),
        "{e}"
    );
    let e = check(&format!(
        "{MINIMAL}\n[[pools]]\nname = \"p\"\n[pools.template]\ncpu = \"-2\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("pools[0].template.cpu") && e.contains("negative"),
        "{e}"
    );
    let e = check(&format!(
        "{MINIMAL}\n[[pools]]\nname = \"p\"\nprovider = \"cloud\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown provider"), "{e}");
}

#[test]
fn a_missing_cookie_says_how_to_set_it() {
    let e = check("[node]\ndata_dir = \"/tmp/x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("HODEI_COOKIE"), "{e}");
    let e = check("[node]\ndata_dir = \"/tmp/x\"\ncookie = \"short\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 8"), "{e}");
}

#[test]
fn environment_overrides_the_main_fields() {
    let mut raw = RawConfig::parse(MINIMAL, "t").unwrap();
    raw.apply_env(|k| match k {
        "HODEI_LISTEN" => Some("0.0.0.0:9999".into()),
        "HODEI_COOKIE" => Some("from-the-env".into()),
        _ => None,
    });
    let c = raw.validate(HOST).unwrap();
    assert_eq!(c.node.listen.port(), 9999);
    assert_eq!(c.node.advertise.to_string(), "127.0.0.1:9999");
    assert_eq!(c.node.cookie, "from-the-env");
}

#[test]
fn pool_templates_default_to_the_host() {
    let c = check(&format!("{MINIMAL}\n[[pools]]\nname = \"p\"\n")).unwrap();
    assert_eq!(c.pools[0].template.capacity.cpu_millis, 2000);
    assert_eq!(c.pools[0].min_workers, 1);
    assert_eq!(c.pools[0].max_workers, 1);
}

#[test]
fn duplicate_pools_are_refused() {
    let e = check(&format!(
        "{MINIMAL}\n[[pools]]\nname = \"p\"\n[[pools]]\nname = \"p\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("pools[1].name") && e.contains("duplicate"),
        "{e}"
    );
}

#[test]
fn timing_relations_are_checked() {
    let e = check(&format!(
        "{MINIMAL}\n[agents]\nheartbeat_interval = \"1s\"\nheartbeat_timeout = \"1s\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("twice"), "{e}");
}

#[test]
fn pool_scaling_and_providers_are_validated_with_the_field_named() {
    let pool = |extra: &str| {
        format!(
            "{MINIMAL}\n[providers.cheap]\ncost_per_second = 0.5\n\n[[pools]]\nname = \"p\"\nmin = 0\nmax = 3\n{extra}"
        )
    };
    let c = check(&pool(
        "providers = [\"cheap\", \"local\"]\n[pools.scaling]\nmax_step_up = 2\nephemeral = true\n",
    ))
    .unwrap();
    assert_eq!(c.pools[0].providers, ["cheap", "local"]);
    assert_eq!(c.pools[0].scaling.max_step_up, 2);
    assert!(c.pools[0].scaling.ephemeral);
    assert_eq!(
        c.pools[0].scaling.max_workers, 3,
        "bounds come from the pool"
    );
    assert_eq!(c.providers["cheap"].cost_micros_per_second, 500_000);
    let e = check(&pool("providers = [\"nope\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pools[0].providers") && e.contains("nope"),
        "{e}"
    );
    let e = check(&pool("[pools.scaling]\nmin_workers = 2\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pools[0].scaling.min_workers") && e.contains("set it on the pool itself"),
        "{e}"
    );
    let c = check(&format!(
        "{}\n[quotas.pools.p]\nmax_workers = 2\nmax_cpu = \"3\"\n",
        pool("")
    ))
    .unwrap();
    assert_eq!(c.pools[0].scaling.quota.max_workers, Some(2));
    assert_eq!(c.pools[0].scaling.quota.max_cpu_millis, Some(3000));
    let e = check(&format!(
        "{}\n[quotas.pools.nope]\nmax_workers = 2\n",
        pool("")
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("quotas.pools.nope"), "{e}");
    let e = check(&pool("[pools.scaling]\nmax_step_upp = 2\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_step_upp"), "{e}");
}

#[test]
fn a_docker_provider_is_validated_and_gives_its_pools_default_limits() {
    let c = check(&format!(
        "{MINIMAL}\n[providers.docker]\nkind = \"docker\"\nhost = \"unix:///run/docker.sock\"\ncpu = \"2\"\nmemory = \"1Gi\"\nexpected_startup = \"800ms\"\n\n[[pools]]\nname = \"boxes\"\nproviders = [\"docker\"]\nmin = 0\nmax = 3\n[pools.template]\nimage = \"my/worker:1\"\n"
    ))
    .unwrap();
    let d = c.providers["docker"]
        .docker
        .as_ref()
        .expect("docker settings");
    assert_eq!(d.host, "unix:///run/docker.sock");
    assert_eq!(d.network, "host");
    assert_eq!(d.create_concurrency, 4);
    assert_eq!(d.health_interval_ms, 5_000);
    assert_eq!(c.providers["docker"].expected_startup_ms, 800);
    assert_eq!(c.pools[0].template.capacity.cpu_millis, 2_000);
    assert_eq!(c.pools[0].template.capacity.memory_bytes, 1 << 30);
    assert_eq!(c.pools[0].template.image.as_deref(), Some("my/worker:1"));

    let bad = |extra: &str| {
        check(&format!("{MINIMAL}\n{extra}"))
            .unwrap_err()
            .to_string()
    };
    let e = bad("[providers.d]\nkind = \"docker\"\nhost = \"/var/run/docker.sock\"\n");
    assert!(
        e.contains("providers.d.host") && e.contains("unix://"),
        "{e}"
    );
    let e = bad("[providers.l]\nkind = \"local\"\nimage = \"x\"\n");
    assert!(
        e.contains("providers.l.image") && e.contains("only for kind"),
        "{e}"
    );
    let e = bad("[providers.k]\nkind = \"kubernetes\"\n");
    assert!(e.contains("available: local, docker"), "{e}");
    let e = bad("[providers.d]\nkind = \"docker\"\ncreate_concurrency = 0\n");
    assert!(e.contains("providers.d.create_concurrency"), "{e}");
    let e = bad("[providers.d]\nkind = \"docker\"\nnode_address = \"somewhere\"\n");
    assert!(e.contains("providers.d.node_address"), "{e}");
    let e = bad("[providers.d]\nkind = \"docker\"\nbinary = \"/usr/bin/hodei\"\n");
    assert!(e.contains("set image instead"), "{e}");
}
