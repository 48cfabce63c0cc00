//! Parsing cron expressions: every accepted form, and a reason naming
//! the field of the expression for every refusal.

use super::*;
use crate::cron::Cron;

fn parsed(expression: &str) -> Cron {
    Cron::parse(expression).unwrap()
}

/// The values of a set, lowest first.
fn set(bits: u64) -> Vec<u8> {
    crate::cron::values(bits).collect()
}

#[test]
fn five_fields_mean_second_zero_and_six_put_seconds_first() {
    let five = parsed("5 4 * * *");
    assert_eq!(set(five.seconds), [0]);
    assert_eq!(set(five.minutes), [5]);
    assert_eq!(set(five.hours), [4]);
    assert!(!five.with_seconds);
    let six = parsed("30 5 4 * * *");
    assert_eq!(set(six.seconds), [30]);
    assert_eq!(set(six.minutes), [5]);
    assert_eq!(set(six.hours), [4]);
    assert!(six.with_seconds);
    // Any whitespace separates fields.
    assert_eq!(
        parsed("  5\t4  * *\n* "),
        Cron {
            text: "5\t4  * *\n*".into(),
            ..five
        }
    );
}

#[test]
fn items_ranges_steps_and_lists() {
    let cron = parsed("*/15 1-5 1,15,31 */3 1-5/2");
    assert_eq!(set(cron.minutes), [0, 15, 30, 45]);
    assert_eq!(set(cron.hours), [1, 2, 3, 4, 5]);
    assert_eq!(set(cron.days), [1, 15, 31]);
    assert_eq!(set(cron.months), [1, 4, 7, 10]);
    assert_eq!(set(cron.weekdays), [1, 3, 5]);
    // a/n runs from a to the field's end.
    assert_eq!(set(parsed("50/5 * * * *").minutes), [50, 55]);
    assert_eq!(set(parsed("0 20/2 * * *").hours), [20, 22]);
    assert_eq!(set(parsed("0 0 25/3 * *").days), [25, 28, 31]);
    // Lists mix every form.
    assert_eq!(
        set(parsed("1,10-12,*/20,58/1 * * * *").minutes),
        [0, 1, 10, 11, 12, 20, 40, 58, 59]
    );
    // The whole range as a step of 1, and a step as wide as the field.
    assert_eq!(set(parsed("*/1 * * * *").minutes).len(), 60);
    assert_eq!(set(parsed("*/60 * * * *").minutes), [0]);
    assert_eq!(set(parsed("0 0 * * *").days).len(), 31);
    assert_eq!(set(parsed("* * * * * *").seconds).len(), 60);
}

#[test]
fn month_and_day_names_in_any_case() {
    let cron = parsed("0 0 * jan,Mar-MAY mon-fri");
    assert_eq!(set(cron.months), [1, 3, 4, 5]);
    assert_eq!(set(cron.weekdays), [1, 2, 3, 4, 5]);
    assert_eq!(set(parsed("0 0 * DEC sun,Sat").weekdays), [0, 6]);
    assert_eq!(set(parsed("0 0 * * FRI-SUN").weekdays), [0, 5, 6]);
    assert_eq!(set(parsed("0 0 * JAN-DEC/6 *").months), [1, 7]);
}

#[test]
fn sunday_is_zero_and_seven() {
    assert_eq!(set(parsed("0 0 * * 7").weekdays), [0]);
    assert_eq!(set(parsed("0 0 * * 0").weekdays), [0]);
    assert_eq!(set(parsed("0 0 * * 5-7").weekdays), [0, 5, 6]);
    assert_eq!(set(parsed("0 0 * * 0-7").weekdays).len(), 7);
    assert_eq!(set(parsed("0 0 * * */2").weekdays), [0, 2, 4, 6]);
}

#[test]
fn question_mark_is_a_star_in_day_fields() {
    let cron = parsed("0 12 ? * MON");
    assert_eq!(set(cron.days).len(), 31);
    assert!(cron.days_unrestricted);
    let cron = parsed("0 12 1 * ?");
    assert_eq!(set(cron.weekdays).len(), 7);
    assert!(cron.weekdays_unrestricted);
    assert_eq!(
        cron_refusal("? * * * *"),
        "minute field: ? is only allowed in day-of-month and day-of-week"
    );
    assert_eq!(
        cron_refusal("0 0 ?/2 * *"),
        "day-of-month field: ?/2: ? takes no step"
    );
}

#[test]
fn shorthands_stand_for_their_five_fields() {
    for (name, fields) in [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@Daily", "0 0 * * *"),
    ] {
        let named = parsed(name);
        assert_eq!(named.text, name.to_ascii_lowercase());
        assert_eq!(
            Cron {
                text: fields.into(),
                ..named
            },
            parsed(fields),
            "{name}"
        );
    }
    assert_eq!(
        cron_refusal("@reboot"),
        "@reboot is not supported: schedules fire at times, not at start-up"
    );
    assert!(cron_refusal("@often").starts_with("unknown name @often (expected @yearly"));
    assert_eq!(cron_refusal("@daily 5"), "expected nothing after @daily");
}

#[test]
fn vixie_rule_either_day_field_when_both_are_restricted() {
    // 1st of the month or a Monday: both restricted.
    let calendar = cron("0 0 1 * MON", "");
    assert_eq!(
        shown(&calendar.upcoming(at("2026-06-01T00:00:00Z"), 4)),
        [
            "2026-06-08T00:00:00Z",
            "2026-06-15T00:00:00Z",
            "2026-06-22T00:00:00Z",
            "2026-06-29T00:00:00Z"
        ]
    );
    assert_eq!(
        show(calendar.next_after(at("2026-06-29T00:00:00Z")).unwrap()),
        "2026-07-01T00:00:00Z"
    );
    // Day-of-week unrestricted: only the 1st.
    let calendar = cron("0 0 1 * *", "");
    assert_eq!(
        shown(&calendar.upcoming(at("2026-06-01T00:00:00Z"), 2)),
        ["2026-07-01T00:00:00Z", "2026-08-01T00:00:00Z"]
    );
    // A step over * leaves the field unrestricted (Vixie cron): odd days
    // that are Mondays.
    let calendar = cron("0 0 */2 * MON", "");
    assert_eq!(
        shown(&calendar.upcoming(at("2026-06-01T00:00:00Z"), 3)),
        [
            "2026-06-15T00:00:00Z",
            "2026-06-29T00:00:00Z",
            "2026-07-13T00:00:00Z"
        ]
    );
    // ? in day-of-month: Mondays only.
    let calendar = cron("0 0 ? * MON", "");
    assert_eq!(
        show(calendar.next_after(at("2026-06-01T00:00:00Z")).unwrap()),
        "2026-06-08T00:00:00Z"
    );
}

#[test]
fn each_bad_field_is_refused_with_its_name_and_reason() {
    for (expression, reason) in [
        ("61 * * * *", "minute field: 61 is out of 0-59"),
        ("60 * * * * *", "second field: 60 is out of 0-59"),
        ("0 24 * * *", "hour field: 24 is out of 0-23"),
        ("0 0 0 * *", "day-of-month field: 0 is out of 1-31"),
        ("0 0 32 * *", "day-of-month field: 32 is out of 1-31"),
        ("0 0 * 13 *", "month field: 13 is out of 1-12"),
        ("0 0 * 0 *", "month field: 0 is out of 1-12"),
        ("0 0 * * 8", "day-of-week field: 8 is out of 0-7"),
        (
            "99999999999 * * * *",
            "minute field: 99999999999 is out of 0-59",
        ),
        ("5-1 * * * *", "minute field: 5-1 is a reversed range"),
        (
            "0 0 * * SAT-MON",
            "day-of-week field: SAT-MON is a reversed range",
        ),
        ("*/0 * * * *", "minute field: step 0 is out of 1-60"),
        ("*/61 * * * *", "minute field: step 61 is out of 1-60"),
        ("0 */25 * * *", "hour field: step 25 is out of 1-24"),
        ("*/x * * * *", "minute field: step \"x\" is not a number"),
        ("1/ * * * *", "minute field: step \"\" is not a number"),
        (
            "/5 * * * *",
            "minute field: /5: a step needs a start, as */n or a/n",
        ),
        ("1,,2 * * * *", "minute field: empty item in a list"),
        ("1, * * * *", "minute field: empty item in a list"),
        ("1- * * * *", "minute field: 1- is not a valid range"),
        ("1-2-3 * * * *", "minute field: 1-2-3 is not a valid range"),
        ("-1 * * * *", "minute field: -1 is not a valid range"),
        ("x * * * *", "minute field: x is not a number"),
        (
            "0 0 * MON *",
            "month field: MON is not a number or a month name (JAN-DEC)",
        ),
        (
            "0 0 * * JAN",
            "day-of-week field: JAN is not a number or a day name (SUN-SAT)",
        ),
        (
            "0 0 L * *",
            "day-of-month field: L: L (last day) is not supported",
        ),
        (
            "0 0 15W * *",
            "day-of-month field: 15W: W (nearest weekday) is not supported",
        ),
        (
            "0 0 LW * *",
            "day-of-month field: LW: W (nearest weekday) is not supported",
        ),
        (
            "0 0 * * 5L",
            "day-of-week field: 5L: L (last day) is not supported",
        ),
        (
            "0 0 * * 5#3",
            "day-of-week field: 5#3: # (nth weekday of the month) is not supported",
        ),
    ] {
        assert_eq!(cron_refusal(expression), reason, "{expression}");
    }
}

#[test]
fn wrong_numbers_of_fields_are_refused() {
    let expected = "expected 5 fields (minute hour day-of-month month day-of-week) \
                    or 6 (second first), got";
    assert_eq!(cron_refusal("* * * *"), format!("{expected} 4"));
    assert_eq!(cron_refusal("* * * * * * *"), format!("{expected} 7"));
    assert_eq!(cron_refusal(""), "is empty");
    assert_eq!(cron_refusal("   "), "is empty");
}

#[test]
fn an_expression_matching_no_date_never_fires() {
    assert_eq!(cron_refusal("0 0 30 2 *"), "never fires");
    assert_eq!(cron_refusal("0 0 31 4,6,9,11 *"), "never fires");
    // 29 February is years apart, yet found.
    let calendar = cron("0 0 29 2 *", "");
    assert_eq!(
        show(calendar.next_after(new_year()).unwrap()),
        "2028-02-29T00:00:00Z"
    );
    assert_eq!(
        show(calendar.next_after(at("2096-03-01T00:00:00Z")).unwrap()),
        "2104-02-29T00:00:00Z"
    );
}
