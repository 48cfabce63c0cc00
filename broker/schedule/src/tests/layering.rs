//! The schedule crate is pure, like the queue: no gRPC, protobuf,
//! runtime or storage crate, nor any crate of the broker's but
//! `sluice-limits`, and no clock: "now" is always an argument. Its
//! manifest is what the compiler lets it import, so the rule holds as long
//! as this list does.

/// The names in the `[dependencies]` table of a Cargo manifest.
fn dependencies(manifest: &str) -> Vec<&str> {
    manifest
        .lines()
        .skip_while(|l| l.trim() != "[dependencies]")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .filter_map(|l| l.split(['=', '.']).next())
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.starts_with('#'))
        .collect()
}

#[test]
fn the_schedule_crate_depends_on_no_grpc_protobuf_runtime_or_broker_crate() {
    let schedule = dependencies(include_str!("../../Cargo.toml"));
    assert!(schedule.contains(&"jiff"), "{schedule:?}");
    for name in &schedule {
        let forbidden = ["tonic", "prost", "redb", "hyper", "h2", "tokio", "chrono"]
            .iter()
            .any(|f| name.starts_with(f))
            || (name.starts_with("sluice-") && *name != "sluice-limits");
        assert!(!forbidden, "the schedule crate must not depend on {name}");
    }
}

#[test]
fn the_schedule_crate_never_reads_the_clock_or_the_host_zone_database() {
    let sources = [
        include_str!("../calendar.rs"),
        include_str!("../civil.rs"),
        include_str!("../describe.rs"),
        include_str!("../error.rs"),
        include_str!("../interval.rs"),
        include_str!("../lib.rs"),
        include_str!("../plan.rs"),
        include_str!("../policy.rs"),
        include_str!("../ticks.rs"),
        include_str!("../zone.rs"),
        include_str!("../cron/mod.rs"),
        include_str!("../cron/parse.rs"),
    ];
    for source in sources {
        // Code only: a comment may say what is not used.
        let code: String = source
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect();
        for call in [
            "SystemTime::now",
            "Instant::now",
            "Timestamp::now",
            "Zoned::now",
            "TimeZone::system",
            "tz::db()",
        ] {
            assert!(!code.contains(call), "{call} in the schedule crate");
        }
    }
}
