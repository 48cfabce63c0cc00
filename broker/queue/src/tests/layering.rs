//! The queue depends on nothing above it: no gRPC, protobuf or storage
//! crate, nor any crate of the broker's service, store or contract. Its
//! manifest is what the compiler lets it import, so the rule holds as long
//! as this list does; `sluice-limits`, its one crate of ours, must itself
//! depend on nothing. The schedule crate's manifest is held to the same
//! rule here.

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
fn the_queue_depends_on_no_grpc_protobuf_storage_or_broker_crate() {
    let queue = dependencies(include_str!("../../Cargo.toml"));
    assert!(queue.contains(&"sluice-limits"), "{queue:?}");
    for name in &queue {
        let forbidden = ["tonic", "prost", "redb", "hyper", "h2", "tokio"]
            .iter()
            .any(|f| name.starts_with(f))
            || (name.starts_with("sluice-") && *name != "sluice-limits");
        assert!(!forbidden, "the queue must not depend on {name}");
    }
    let limits = dependencies(include_str!("../../../../limits/Cargo.toml"));
    assert!(
        limits.is_empty(),
        "sluice-limits must have no dependencies: {limits:?}"
    );
}

/// The schedule crate is pure too (its own test checks its code for
/// clock and zone-database reads): jiff, and of ours only `sluice-limits`.
#[test]
fn the_schedule_crate_depends_on_no_grpc_protobuf_runtime_or_broker_crate() {
    let schedule = dependencies(include_str!("../../../schedule/Cargo.toml"));
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
fn the_manifest_reader_sees_every_dependency() {
    let manifest = "[package]\nname = \"x\"\n\n[dependencies]\n# why\ntonic.workspace = true\nredb = \"4\"\n\n[lints]\nworkspace = true\n";
    assert_eq!(dependencies(manifest), ["tonic", "redb"]);
}
