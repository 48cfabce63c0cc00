// Copies the repository's proto/sluice into this package (proto/), which
// the client loads at run time: the package carries the contract it was
// built from.
import { cpSync, rmSync } from "node:fs";

const from = new URL("../../../proto/sluice/", import.meta.url);
const to = new URL("../proto/sluice/", import.meta.url);
rmSync(to, { recursive: true, force: true });
cpSync(from, to, { recursive: true });
