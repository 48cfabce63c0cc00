//! The schedule crate is pure, like the queue: no clock ("now" is always
//! an argument) and no zone database but the one compiled in. (Its
//! manifest, what the compiler lets it import, is checked beside the
//! queue's in `broker/queue/src/tests/layering.rs`.)

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
