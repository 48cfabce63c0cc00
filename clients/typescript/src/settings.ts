// How a client reaches the broker: its URL, TLS files and token, with the
// same names and environment variables as the Rust worker (SLUICE_BROKER,
// SLUICE_TOKEN or SLUICE_TOKEN_FILE, SLUICE_TLS_CA, SLUICE_TLS_CERT,
// SLUICE_TLS_KEY). `https://` turns TLS on (the system's roots, or only
// tlsCa); tlsCert and tlsKey together present a client certificate. The
// token goes as `authorization: Bearer ...` metadata on every call and is
// never logged. Settings that cannot work throw SettingsError.
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import * as grpc from "@grpc/grpc-js";

export const DEFAULT_BROKER = "http://127.0.0.1:50051";

/** HTTP/2 keepalive as the Rust worker's (docs/worker-protocol.md, L1). */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.max_receive_message_length": 256 << 20,
};

export class SettingsError extends Error {
  override name = "SettingsError";
}

export interface SettingsInit {
  broker?: string;
  token?: string;
  tokenFile?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

export class Settings {
  readonly broker: string;
  readonly token?: string;
  readonly tlsCa?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;

  /** Settings from `init`, then the environment `env` (default: process.env). */
  static fromEnv(init: SettingsInit = {}, env: NodeJS.ProcessEnv = process.env): Settings {
    const tokenFile = init.tokenFile ?? env.SLUICE_TOKEN_FILE;
    let token = init.token;
    if (token === undefined) {
      if (tokenFile && env.SLUICE_TOKEN) {
        throw new SettingsError("give SLUICE_TOKEN or a token file, not both");
      }
      if (tokenFile) {
        try {
          token = readFileSync(tokenFile, "utf8").trim();
        } catch (e) {
          throw new SettingsError(`reading the token file ${tokenFile}: ${(e as Error).message}`);
        }
      } else {
        token = env.SLUICE_TOKEN;
      }
    }
    return new Settings({
      broker: init.broker ?? env.SLUICE_BROKER ?? DEFAULT_BROKER,
      token,
      tlsCa: init.tlsCa ?? env.SLUICE_TLS_CA,
      tlsCert: init.tlsCert ?? env.SLUICE_TLS_CERT,
      tlsKey: init.tlsKey ?? env.SLUICE_TLS_KEY,
    });
  }

  constructor(init: SettingsInit) {
    this.broker = init.broker ?? DEFAULT_BROKER;
    this.token = init.token;
    this.tlsCa = init.tlsCa || undefined;
    this.tlsCert = init.tlsCert || undefined;
    this.tlsKey = init.tlsKey || undefined;
    const target = this.target;
    if (!this.tls && (this.tlsCa || this.tlsCert || this.tlsKey)) {
      throw new SettingsError(`TLS files were given but the broker URL ${this.broker} is not https://`);
    }
    if (Boolean(this.tlsCert) !== Boolean(this.tlsKey)) {
      throw new SettingsError("a client certificate needs both tlsCert and tlsKey");
    }
    if (this.token !== undefined) {
      if (!/^[\x21-\x7e]+$/.test(this.token)) {
        throw new SettingsError("the token must be visible ASCII without whitespace");
      }
      const host = target.slice(0, target.lastIndexOf(":")).replace(/^\[|\]$/g, "");
      if (!this.tls && !loopback(host)) {
        console.warn(`sluice: the token is sent in plaintext to ${host}: use https://`);
      }
    }
  }

  get tls(): boolean {
    return this.broker.startsWith("https://");
  }

  /** `host:port` for grpc-js. */
  get target(): string {
    let url: URL;
    try {
      url = new URL(this.broker);
    } catch {
      throw new SettingsError(`broker URL ${JSON.stringify(this.broker)}: expected http://HOST:PORT or https://HOST:PORT`);
    }
    if ((url.protocol !== "http:" && url.protocol !== "https:") || !url.hostname) {
      throw new SettingsError(`broker URL ${JSON.stringify(this.broker)}: expected http://HOST:PORT or https://HOST:PORT`);
    }
    const port = url.port || (url.protocol === "https:" ? "443" : "80");
    return `${url.hostname}:${port}`;
  }

  /** Metadata for every call: the token, if any. */
  metadata(): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (this.token) metadata.set("authorization", `Bearer ${this.token}`);
    return metadata;
  }

  credentials(): grpc.ChannelCredentials {
    if (!this.tls) return grpc.credentials.createInsecure();
    const read = (name: string, path?: string): Buffer | null => {
      if (!path) return null;
      let data: Buffer;
      try {
        data = readFileSync(path);
      } catch (e) {
        throw new SettingsError(`reading ${name} ${path}: ${(e as Error).message}`);
      }
      if (!data.includes("-----BEGIN")) throw new SettingsError(`${name} ${path} holds no PEM data`);
      return data;
    };
    return grpc.credentials.createSsl(read("tlsCa", this.tlsCa), read("tlsKey", this.tlsKey), read("tlsCert", this.tlsCert));
  }
}

function loopback(host: string): boolean {
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  return host === "::1";
}
