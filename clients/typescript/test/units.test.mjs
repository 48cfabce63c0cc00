// Unit tests with Node's own runner (npm test): the parts that need no broker.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Settings, SettingsError, ackBatches, backoff, humantime, resultBytes } from "sluice-client";

test("durations read as the Rust worker writes them", () => {
  assert.equal(humantime(1), "1s");
  assert.equal(humantime(90), "1m 30s");
  assert.equal(humantime(3600), "1h");
  assert.equal(humantime(1.5), "1500ms");
});

test("the backoff doubles from 100 ms to 5 s, within 25%", () => {
  for (const [n, base] of [[0, 100], [1, 200], [5, 3200], [6, 5000], [20, 5000]]) {
    for (let i = 0; i < 50; i++) {
      const d = backoff(n);
      assert.ok(d >= base * 0.75 && d <= base * 1.25, `${n}: ${d}`);
    }
  }
});

test("settings come from the environment, and bad ones are refused naming the problem", () => {
  const s = Settings.fromEnv({}, { SLUICE_BROKER: "https://broker.example:7000", SLUICE_TOKEN: "t0k3n" });
  assert.equal(s.target, "broker.example:7000");
  assert.ok(s.tls);
  assert.equal(s.metadata().get("authorization")[0], "Bearer t0k3n");
  assert.throws(() => Settings.fromEnv({ tlsCa: "ca.pem" }, { SLUICE_BROKER: "http://127.0.0.1:1" }), /not https/);
  assert.throws(() => Settings.fromEnv({ token: "two words" }, {}), SettingsError);
  assert.throws(() => Settings.fromEnv({}, { SLUICE_TOKEN: "" }), SettingsError);
  assert.throws(() => Settings.fromEnv({ tokenFile: "/nonexistent" }, { SLUICE_TOKEN: "x" }), /not both/);
  assert.throws(() => Settings.fromEnv({ broker: "ftp://x" }, {}), /expected http/);
});

test("a handler's value becomes its result's bytes", () => {
  assert.deepEqual(resultBytes(undefined), Buffer.alloc(0));
  assert.deepEqual(resultBytes(null), Buffer.alloc(0));
  assert.deepEqual(resultBytes("héllo"), Buffer.from("héllo", "utf8"));
  assert.deepEqual(resultBytes(new Uint8Array([0, 255])), Buffer.from([0, 255]));
  assert.deepEqual(resultBytes({ sent: 3 }), Buffer.from('{"sent":3}'));
  assert.deepEqual(resultBytes(7), Buffer.from("7"));
  const cycle = {};
  cycle.self = cycle;
  assert.throws(() => resultBytes(cycle), TypeError);
  assert.throws(() => resultBytes(10n), TypeError);
  assert.throws(() => resultBytes(() => 1), TypeError);
});

test("acks are cut into batches the broker takes, in order", () => {
  assert.deepEqual(ackBatches([], () => 0), []);
  const big = Array.from({ length: 17 }, (_, i) => i);
  const cut = ackBatches(big, () => 64 * 1024);
  const perBatch = Math.floor((512 * 1024) / (64 * 1024 + 100));
  assert.deepEqual(cut.map((b) => b.length), [perBatch, perBatch, 17 - 2 * perBatch]);
  assert.deepEqual(cut.flat(), big);
  const many = ackBatches(Array.from({ length: 20_000 }, (_, i) => i), () => 0);
  assert.ok(many.every((b) => b.length <= 10_000));
  assert.equal(many.flat().length, 20_000);
});
