//! The dashboard in a real browser: Debian's headless Chromium driven
//! through chromedriver (`scripts/test` installs both), against the real
//! `sluice-broker` and `sluice-worker` binaries. Screenshots of each page
//! go to `target/tmp/dashboard-screenshots/` (printed at the end).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use serde_json::json;
use sluice_e2e::browser::{Browser, ENTER, TAB};
use sluice_e2e::in_process::eventually;
use sluice_e2e::{BrokerProcess, WorkerProcess, job_in, scratch_dir};
use sluice_proto::v1 as pb;

const ADMIN: &str = "admin-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";

/// Every element of the page with text of its own whose colour against its
/// background has a contrast ratio under 4.5 (WCAG 2 AA for body text),
/// as "tag.class "text" ratio".
const LOW_CONTRAST: &str = r#"
const rgb = (c) => c.match(/[\d.]+/g).map(Number);
const luminance = ([r, g, b]) => {
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
};
const background = (el) => {
  for (; el; el = el.parentElement) {
    const c = rgb(getComputedStyle(el).backgroundColor);
    if (c.length < 4 || c[3] > 0) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
const low = [];
for (const el of document.querySelectorAll("header *, main *")) {
  if (![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
  const a = luminance(rgb(getComputedStyle(el).color).slice(0, 3));
  const b = luminance(background(el));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < 4.5) low.push(`${el.tagName}.${el.className} "${el.textContent.slice(0, 20)}" ${ratio.toFixed(2)}`);
}
return low;
"#;

/// Fails naming every text of the page under WCAG AA contrast.
async fn assert_contrast(browser: &Browser, page: &str) {
    let low = browser.run(LOW_CONTRAST).await;
    assert_eq!(low, json!([]), "low contrast on the {page} page");
}

/// A start time no test outlives.
fn a_year_from_now() -> prost_types::Timestamp {
    (std::time::SystemTime::now() + std::time::Duration::from_secs(365 * 24 * 3600)).into()
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The issue's scenario: an empty overview; counts that change without a
/// reload; a job a worker fails to DEAD, read in Dead letters and on its
/// page, retried with a click and seen to succeed; a queue paused.
#[tokio::test]
async fn an_operator_finds_a_dead_job_retries_it_and_pauses_a_queue() {
    let shots = screenshots();
    let dir = scratch_dir("dashboard-browser");
    let broker = BrokerProcess::start(&["--http-addr", "127.0.0.1:0"]);
    let http = broker.process.http_addr();
    let browser = Browser::start("scenario").await;
    browser.goto(&format!("http://{http}/")).await;

    // 1. No jobs: the empty state says what to do.
    browser
        .wait_for_text("#empty-queues", "No queues yet: enqueue a job with")
        .await;
    browser.screenshot(&shots, "01-overview-empty").await;
    // A mark in the page's memory: a reload would lose it.
    browser.run("window.sluiceMark = 42; return true;").await;

    // 2. Jobs arrive; the counts change in place.
    let mut producer = broker.broker().await;
    for n in 0..5 {
        let payload = format!(r#"{{"to": "user{n}@example.com"}}"#);
        producer
            .enqueue(job_in("mail", "email", payload.as_bytes()))
            .await
            .unwrap();
    }
    let charge = producer
        .enqueue(job_in(
            "billing",
            "charge",
            br#"{"order": 1234, "amount": "12.50"}"#,
        ))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    browser
        .wait_for_text(r#"tr[data-queue="mail"] td.ready"#, "5")
        .await;
    browser
        .wait_for_text(r#"tr[data-queue="billing"] td.ready"#, "1")
        .await;
    browser.screenshot(&shots, "02-overview-jobs").await;

    // 3. A worker: every email succeeds; the charge fails for good the
    // first time (exit 65) and succeeds once retried.
    let marker = dir.join("charged-once");
    let charge_command = format!(
        "charge=test -e {m} || {{ touch {m}; echo 'card declined: insufficient funds' >&2; exit 65; }}; \
         echo 'result {{\"charged\": \"12.50\"}}' >&3",
        m = marker.display()
    );
    // Reports its progress twice, each step waiting for a file of the test.
    let (step1, step2) = (dir.join("import-step-1"), dir.join("import-step-2"));
    let import_command = format!(
        "import=echo 'progress 30 {{\"rows\": 300}}' >&3; while [ ! -e {a} ]; do sleep 0.05; done; \
         echo 'progress 80 writing' >&3; while [ ! -e {b} ]; do sleep 0.05; done; echo 'result imported' >&3",
        a = step1.display(),
        b = step2.display()
    );
    let _worker = WorkerProcess::start(
        &broker,
        &[
            "--queues",
            "mail,billing",
            "--exec",
            "email=true",
            "--exec",
            &charge_command,
            "--exec",
            &import_command,
        ],
    );
    browser
        .wait_for_text(r#"tr[data-queue="billing"] td.dead"#, "1")
        .await;
    browser
        .wait_for_text(r#"tr[data-queue="mail"] td.ready"#, "0")
        .await;
    assert_eq!(
        browser.run("return window.sluiceMark;").await,
        json!(42),
        "the page reloaded itself"
    );
    // The check itself finds light grey on white.
    let probe = browser
        .run(&format!(
            "const p = document.createElement('p'); p.textContent = 'faint'; p.style.color = '#bbb';\
             document.querySelector('main').append(p);\
             const low = (() => {{ {LOW_CONTRAST} }})(); p.remove(); return low;"
        ))
        .await;
    assert_eq!(probe.as_array().map(Vec::len), Some(1), "{probe}");
    assert_contrast(&browser, "overview").await;
    browser.screenshot(&shots, "03-overview-after-worker").await;

    // 4. Dead letters: the job and its error at a glance.
    browser.click(r#"nav a[data-nav="dead"]"#).await;
    browser
        .wait_for_text("#dead-jobs", "card declined: insufficient funds")
        .await;
    browser.wait_for_text("#dead-jobs", &charge).await;
    assert_contrast(&browser, "dead letters").await;
    browser.screenshot(&shots, "04-dead-letters").await;

    // 5. The job's page: its error and payload; retry; it succeeds.
    browser
        .click(&format!(r#"#dead-jobs a[data-key="job-{charge}"]"#))
        .await;
    browser.wait_for_text("#job-state", "DEAD").await;
    browser
        .wait_for_text("#job-error", "card declined: insufficient funds")
        .await;
    browser
        .wait_for_text("#job-payload", "\"amount\": \"12.50\"")
        .await;
    let hover = browser
        .run("const t = document.querySelector('#job-state ~ dd time'); return [t.textContent, t.title];")
        .await;
    assert!(hover[0].as_str().unwrap().ends_with(" ago"), "{hover}");
    assert!(
        hover[1].as_str().unwrap().contains("Z)"),
        "absolute time on hover: {hover}"
    );
    assert_contrast(&browser, "job").await;
    browser.screenshot(&shots, "05-job-dead").await;
    browser.click("#retry-job").await;
    browser.wait_for_text("#job-state", "SUCCEEDED").await;
    let mut admin = broker.admin().await;
    let state = admin
        .get_job(pb::GetJobRequest {
            job_id: charge.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .state();
    assert_eq!(state, pb::JobState::Succeeded);
    browser
        .wait_for_text("#job-result", "\"charged\": \"12.50\"")
        .await;
    browser.screenshot(&shots, "06-job-succeeded").await;

    // 5b. A running job's progress, live on its page; then its result.
    let import = producer
        .enqueue(job_in("billing", "import", b""))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    browser.run("window.sluiceMark = 43; return true;").await;
    browser
        .run(&format!("location.hash = '#/jobs/{import}'; return true;"))
        .await;
    browser.wait_for_text("#job-state", "LEASED").await;
    browser
        .wait_for_text("#job-progress", "30% · attempt 1")
        .await;
    browser
        .wait_for_text("#job-progress-message", "\"rows\": 300")
        .await;
    assert_contrast(&browser, "job running").await;
    browser.screenshot(&shots, "06b-job-progress").await;
    std::fs::write(&step1, "").unwrap();
    browser
        .wait_for_text("#job-progress", "80% · attempt 1")
        .await;
    browser
        .wait_for_text("#job-progress-message", "writing")
        .await;
    std::fs::write(&step2, "").unwrap();
    browser.wait_for_text("#job-state", "SUCCEEDED").await;
    browser.wait_for_text("#job-result", "imported").await;
    assert_eq!(
        browser.run("return window.sluiceMark;").await,
        json!(43),
        "updated in place, not reloaded"
    );

    // 6. Workers: the worker's Lease stream.
    browser.click(r#"nav a[data-nav="workers"]"#).await;
    browser.wait_for_text("#workers", "billing, mail").await;
    browser.screenshot(&shots, "07-workers").await;

    // 7. The keyboard: on a freshly opened page Tab reaches the skip link
    // first, then the menu; a focused link keeps its focus through the
    // live refresh, and Enter follows it.
    browser.goto(&format!("http://{http}/")).await;
    browser
        .wait_for_text(r#"tr[data-queue="mail"] td.ready"#, "0")
        .await;
    browser.press(TAB).await;
    assert_eq!(
        browser
            .run("return document.activeElement.textContent;")
            .await,
        json!("Skip to content")
    );
    browser.press(TAB).await;
    assert_eq!(
        browser
            .run("return document.activeElement.textContent;")
            .await,
        json!("Sluice")
    );
    browser
        .run(r#"document.querySelector('a[data-key="queue-mail"]').focus(); return true;"#)
        .await;
    let updated = browser
        .run("return document.getElementById('live').textContent;")
        .await;
    eventually("the page to refresh", || async {
        browser
            .run("return document.getElementById('live').textContent;")
            .await
            != updated
    })
    .await;
    assert_eq!(
        browser
            .run("return document.activeElement.dataset.key;")
            .await,
        json!("queue-mail"),
        "the refresh took the focus away"
    );
    browser.press(ENTER).await;

    // 8. A queue: pause it, see it paused.
    browser.wait_for_text("#queue-status", "Active").await;
    browser.click("#pause-queue").await;
    browser.wait_for_text("#queue-status", "Paused").await;
    assert!(broker.queue_stats("mail").await.paused);
    browser.wait_for_text("#resume-queue", "Resume").await;
    assert_contrast(&browser, "queue").await;
    browser.screenshot(&shots, "08-queue-paused").await;
    // Its Succeeded tab lists the five emails; purge them, through a
    // confirmation that names the count (the state chosen must survive
    // the refresh while the dialog is open).
    browser.click(r#"a[data-key="tab-SUCCEEDED"]"#).await;
    browser.wait_for_text(".tabs", "SUCCEEDED (5)").await;
    browser
        .click(r#"#purge-state option[value="SUCCEEDED"]"#)
        .await;
    browser.click("#purge-queue").await;
    browser
        .wait_for_text(
            "#confirm-text",
            "Delete the 5 SUCCEEDED jobs of queue mail?",
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    browser.click("#confirm-ok").await;
    browser.wait_for_text(".tabs", "SUCCEEDED (0)").await;
    browser
        .wait_for_text("main", "No SUCCEEDED jobs in this queue.")
        .await;

    // Paging: 60 jobs are two pages of 50.
    for _ in 0..60 {
        producer.enqueue(job_in("bulk", "x", b"")).await.unwrap();
    }
    browser.goto(&format!("http://{http}/#/queues/bulk")).await;
    browser.wait_for_text(".tabs", "READY (60)").await;
    let rows = "return document.querySelectorAll('main tbody tr').length;";
    assert_eq!(browser.run(rows).await, json!(50));
    browser.click(r#"button[data-key="next"]"#).await;
    browser
        .wait_for_text(r#"button[data-key="prev"]"#, "Previous page")
        .await;
    eventually("the second page's 10 jobs", || async {
        browser.run(rows).await == json!(10)
    })
    .await;
    browser.click(r#"button[data-key="prev"]"#).await;
    eventually("the first page again", || async {
        browser.run(rows).await == json!(50)
    })
    .await;

    // 9. On a phone's width nothing but the tables scrolls sideways.
    browser.set_window_size(390, 844).await;
    browser.click(r#"nav a[data-nav="overview"]"#).await;
    browser
        .wait_for_text(r#"tr[data-queue="mail"]"#, "Paused")
        .await;
    let fits = browser
        .run("return document.documentElement.scrollWidth <= window.innerWidth;")
        .await;
    assert_eq!(fits, json!(true), "the page is wider than a phone");
    browser.screenshot(&shots, "09-overview-phone").await;

    browser.close().await;
    eprintln!("screenshots in {}", shots.display());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A schedule made over gRPC (the page creates nothing): listed with its
/// timing in words, triggered from the list, then paused and resumed from
/// its own page, each change seen through the Admin service.
#[tokio::test]
async fn an_operator_triggers_and_pauses_a_schedule() {
    let shots = screenshots();
    let broker = BrokerProcess::start(&["--http-addr", "127.0.0.1:0"]);
    let http = broker.process.http_addr();
    let mut admin = broker.admin().await;
    // Daily at 02:30 in Berlin from a year on: no tick fires while the
    // test runs, whatever the time.
    let created = admin
        .create_schedule(pb::CreateScheduleRequest {
            schedule: Some(pb::Schedule {
                name: "nightly-report".into(),
                cron: "30 2 * * *".into(),
                time_zone: "Europe/Berlin".into(),
                start_at: Some(a_year_from_now()),
                job: Some(pb::JobTemplate {
                    queue: "reports".into(),
                    job_type: "pdf".into(),
                    payload: br#"{"kind": "daily"}"#.to_vec().into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            upsert: false,
        })
        .await
        .unwrap()
        .into_inner();
    let browser = Browser::start("schedules").await;
    browser.goto(&format!("http://{http}/")).await;
    browser.click(r#"nav a[data-nav="schedules"]"#).await;
    let row = r#"tr[data-schedule="nightly-report"]"#;
    browser
        .wait_for_text(&format!("{row} td.description"), &created.description)
        .await;
    browser
        .wait_for_text(&format!("{row} td.last-job"), "none yet")
        .await;
    assert_contrast(&browser, "schedules").await;
    browser.screenshot(&shots, "12-schedules").await;

    // Trigger: one job now, named in the notice. It is not a tick: the
    // last fired tick and its job stay as they were.
    browser
        .click(r#"button[data-key="trigger-nightly-report"]"#)
        .await;
    browser
        .wait_for_text("#schedules-notice", "Schedule nightly-report enqueued job")
        .await;
    let jobs = admin
        .list_jobs(pb::ListJobsRequest {
            queue: "reports".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].headers["sluice-schedule"], "nightly-report");
    browser
        .wait_for_text("#schedules-notice", &jobs[0].id)
        .await;
    browser
        .wait_for_text(&format!("{row} td.last-job"), "none yet")
        .await;

    // Its page: the next five fire times and the recent job; pause, resume.
    browser
        .click(r#"a[data-key="schedule-nightly-report"]"#)
        .await;
    browser.wait_for_text("#schedule-state", "Active").await;
    browser.wait_for_text("#schedule-runs", "triggered").await;
    browser.wait_for_text("#schedule-runs", &jobs[0].id).await;
    browser.wait_for_text("#schedule-runs", "READY").await;
    let upcoming = "return document.querySelectorAll('#schedule-upcoming li').length;";
    assert_eq!(browser.run(upcoming).await, json!(5));
    assert_contrast(&browser, "schedule").await;
    browser.screenshot(&shots, "13-schedule").await;
    browser
        .click(r#"button[data-key="pause-nightly-report"]"#)
        .await;
    browser.wait_for_text("#schedule-state", "Paused").await;
    browser
        .wait_for_text("#schedule-upcoming", "None while paused.")
        .await;
    let read = pb::GetScheduleRequest {
        name: "nightly-report".into(),
    };
    let paused = admin.get_schedule(read.clone()).await.unwrap().into_inner();
    assert!(paused.paused && paused.next_fire_at.is_none());
    browser.screenshot(&shots, "14-schedule-paused").await;
    browser
        .click(r#"button[data-key="resume-nightly-report"]"#)
        .await;
    browser.wait_for_text("#schedule-state", "Active").await;
    let resumed = admin.get_schedule(read).await.unwrap().into_inner();
    assert!(!resumed.paused && resumed.next_fire_at.is_some());
    browser.close().await;
}

/// A queue with limits: its page shows them, what they hold back, and its
/// busiest keys, which change in place as a worker takes jobs.
#[tokio::test]
async fn an_operator_reads_a_queues_limits_and_busiest_keys() {
    let shots = screenshots();
    let broker = BrokerProcess::start(&["--http-addr", "127.0.0.1:0"]);
    let http = broker.process.http_addr();
    let mut admin = broker.admin().await;
    admin
        .set_queue_limits(pb::SetQueueLimitsRequest {
            queue: "imports".into(),
            limits: Some(pb::QueueLimits {
                key_max_in_flight: 1,
                rate: Some(pb::RateLimit {
                    per_second: 5.0,
                    burst: 10,
                }),
                overrides: vec![pb::KeyOverride {
                    key: "acme".into(),
                    max_in_flight: Some(2),
                    weight: 3,
                    ..Default::default()
                }],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut producer = broker.broker().await;
    for (key, n) in [("acme", 4), ("globex", 2)] {
        for _ in 0..n {
            producer
                .enqueue(pb::EnqueueRequest {
                    key: key.into(),
                    ..job_in("imports", "import", b"{}")
                })
                .await
                .unwrap();
        }
    }
    let browser = Browser::start("flow").await;
    browser
        .goto(&format!("http://{http}/#/queues/imports"))
        .await;
    browser.wait_for_text("#limit-key-max-in-flight", "1").await;
    browser.wait_for_text("#limit-rate", "5/s (burst 10)").await;
    browser
        .wait_for_text("#limit-overrides", "acme: max 2 weight 3")
        .await;
    browser
        .wait_for_text(r#"#busiest-keys tr[data-key="key-acme"]"#, "4")
        .await;
    browser
        .wait_for_text(r#"#busiest-keys tr[data-key="key-globex"]"#, "2")
        .await;
    // A worker holds jobs (and never acks them): acme has its 2 in
    // flight, globex its 1, and the rest wait on their key limits.
    let mut worker = broker.broker().await;
    let mut stream = worker
        .lease(pb::LeaseRequest {
            worker_id: "dashboard".into(),
            queues: vec!["imports".into()],
            max_in_flight: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        stream.message().await.unwrap().unwrap();
    }
    browser
        .wait_for_text(r#"#busiest-keys tr[data-key="key-acme"]"#, "key_limit")
        .await;
    browser.wait_for_text("#held", "3 by key limits").await;
    assert_contrast(&browser, "queue with limits").await;
    browser.screenshot(&shots, "15-queue-limits").await;
    browser.close().await;
}

/// With tokens the page asks for one, keeps it only for the tab
/// (sessionStorage, never localStorage), and shows a viewer no buttons.
#[tokio::test]
async fn a_viewer_gives_a_token_once_and_sees_no_action_buttons() {
    let shots = screenshots();
    let dir = scratch_dir("dashboard-browser-tokens");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("admin {ADMIN}\nviewer {VIEWER}\n")).unwrap();
    let broker = BrokerProcess::start(&[
        "--http-addr",
        "127.0.0.1:0",
        "--auth-tokens",
        tokens.to_str().unwrap(),
    ]);
    let mut request = tonic::Request::new(job_in("mail", "email", b"{}"));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
    let id = broker
        .broker()
        .await
        .enqueue(request)
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let mut request = tonic::Request::new(pb::CreateScheduleRequest {
        schedule: Some(pb::Schedule {
            name: "hourly".into(),
            cron: "@hourly".into(),
            start_at: Some(a_year_from_now()),
            job: Some(pb::JobTemplate {
                queue: "digests".into(),
                job_type: "digest".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        upsert: false,
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
    broker.admin().await.create_schedule(request).await.unwrap();
    let http = broker.process.http_addr();
    let browser = Browser::start("tokens").await;
    browser.goto(&format!("http://{http}/")).await;

    browser
        .wait_for_text("main h1", "This broker needs a token")
        .await;
    browser.screenshot(&shots, "10-token-asked").await;
    browser.type_into("#token", "wrong-token-0123456789").await;
    browser.click("main form button[type=submit]").await;
    browser
        .wait_for_text("main .error", "UNAUTHENTICATED")
        .await;
    browser.type_into("#token", VIEWER).await;
    browser.click("main form button[type=submit]").await;
    browser
        .wait_for_text(r#"tr[data-queue="mail"] td.ready"#, "1")
        .await;
    let storage = browser
        .run("return [localStorage.length, sessionStorage.getItem('sluice.token')];")
        .await;
    assert_eq!(storage, json!([0, VIEWER]));

    // Moving between pages does not ask again; no page offers an action.
    browser.click(r#"a[data-key="queue-mail"]"#).await;
    browser.wait_for_text("#queue-status", "Active").await;
    browser.goto(&format!("http://{http}/#/jobs/{id}")).await;
    browser.wait_for_text("#job-state", "READY").await;
    let buttons = browser.run("return document.querySelectorAll('#pause-queue, #purge-queue, #retry-job, #cancel-job, .retry-all').length;",
    )
    .await;
    assert_eq!(buttons, json!(0));
    browser.goto(&format!("http://{http}/#/schedules")).await;
    browser
        .wait_for_text(r#"tr[data-schedule="hourly"] td.description"#, "every hour")
        .await;
    let buttons = "return document.querySelectorAll('.pause-resume, .trigger').length;";
    assert_eq!(browser.run(buttons).await, json!(0));
    browser.screenshot(&shots, "11-job-as-viewer").await;
    browser.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
