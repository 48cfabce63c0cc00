//! Scraping `/metrics` and parsing it with a real OpenMetrics parser: the
//! Prometheus project's Python client (`prometheus_client`, installed by
//! `scripts/test`), run as a child process that fetches the page, parses
//! it and prints every sample as JSON.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

/// Fetches argv[1] (with `Authorization: Bearer argv[2]` if given) and
/// prints its samples, or the HTTP status on failure.
const SCRAPE: &str = r#"
import json, sys, urllib.request, urllib.error
from prometheus_client.openmetrics.parser import text_string_to_metric_families
req = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    req.add_header("Authorization", "Bearer " + sys.argv[2])
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        ctype, text = r.headers["Content-Type"], r.read().decode()
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode()}))
    sys.exit(0)
samples = [{"name": s.name, "labels": s.labels, "value": s.value}
           for f in text_string_to_metric_families(text) for s in f.samples]
print(json.dumps({"status": 200, "content_type": ctype, "samples": samples}))
"#;

/// One sample: its name and labels.
pub type Key = (String, BTreeMap<String, String>);

/// A parsed scrape.
#[derive(Debug)]
pub struct Scrape {
    /// The response's content type.
    pub content_type: String,
    samples: BTreeMap<Key, f64>,
}

/// What the listener answered when it refused: status and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u64,
    pub body: String,
}

/// Scrapes `url`, sending `token` as a bearer token if given.
///
/// # Errors
/// The status and body of a response other than 200.
pub fn try_scrape(url: &str, token: Option<&str>) -> Result<Scrape, Refusal> {
    let output = Command::new("python3")
        .args(["-c", SCRAPE, url])
        .args(token)
        .output()
        .expect("running python3 (scripts/test installs prometheus_client)");
    assert!(
        output.status.success(),
        "the scrape failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    let status = result["status"].as_u64().unwrap();
    if status != 200 {
        return Err(Refusal {
            status,
            body: result["body"].as_str().unwrap_or_default().to_owned(),
        });
    }
    let samples = result["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            let name = s["name"].as_str().unwrap().to_owned();
            ((name, labels), s["value"].as_f64().unwrap())
        })
        .collect();
    Ok(Scrape {
        content_type: result["content_type"].as_str().unwrap().to_owned(),
        samples,
    })
}

/// Scrapes `url`, which must answer 200.
pub fn scrape(url: &str) -> Scrape {
    try_scrape(url, None).unwrap_or_else(|r| panic!("scraping {url}: {r:?}"))
}

impl Scrape {
    /// The value of sample `name` with exactly `labels`, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// The value of sample `name` with exactly `labels`; fails if absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            let known: Vec<&Key> = self.samples.keys().filter(|k| k.0 == name).collect();
            panic!("no sample {name} {labels:?}; samples of that name: {known:?}")
        })
    }

    /// Every sample's key.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.samples.keys()
    }
}
