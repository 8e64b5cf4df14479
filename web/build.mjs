// Build the web app into ../changescope/serve/static/ (index.html, app.js, app.css).
//
// The built files are committed so that users need no Node. Each carries, on its first line (index.html: in a
// <meta> tag), the SHA-256 of the sources it was built from; tests/serve/test_assets.py recomputes that hash in
// Python and fails when the committed bundle is stale. Keep `sourceHash` below and `_source_hash` in that test
// in step.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, "..", "changescope", "serve", "static");

/** Every file the bundle depends on, relative to web/ with "/" separators, sorted. */
export function sourceFiles() {
  const files = ["build.mjs", "index.html", "package.json", "package-lock.json", "tsconfig.json"];
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else files.push(relative(here, path).split(sep).join("/"));
    }
  };
  walk(join(here, "src"));
  return files.sort();
}

/** SHA-256 over (path NUL length NUL content) of every source file, CRLF read as LF. */
export function sourceHash() {
  const hash = createHash("sha256");
  for (const rel of sourceFiles()) {
    const text = Buffer.from(readFileSync(join(here, rel)).toString("binary").replaceAll("\r\n", "\n"), "binary");
    hash.update(`${rel}\0${text.length}\0`);
    hash.update(text);
  }
  return hash.digest("hex");
}

const watch = process.argv.includes("--watch");
const digest = sourceHash();
const stamp = `changescope-web sources sha256:${digest}`;
mkdirSync(outdir, { recursive: true });

const options = {
  entryPoints: { app: join(here, "src", "main.ts") },
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  outdir,
  legalComments: "none",
  banner: { js: `/* ${stamp} */`, css: `/* ${stamp} */` },
  logLevel: "info",
  metafile: true,
};

const html = readFileSync(join(here, "index.html"), "utf8").replace("@SOURCES@", stamp);
writeFileSync(join(outdir, "index.html"), html);

if (watch) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
} else {
  const result = await esbuild.build(options);
  const sizes = Object.entries(result.metafile.outputs).map(([f, o]) => `${relative(here, f)} ${(o.bytes / 1024).toFixed(1)} KiB`);
  console.log(`${stamp}\n${sizes.join("\n")}`);
}
