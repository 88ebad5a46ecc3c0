// Builds the client into dist/: an ES module, a minified IIFE that sets
// window.ChatUp, type declarations (tsc), and the example page. With
// --tests, also bundles the unit tests into build/test/ for node --test.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const common = { bundle: true, target: "es2020", logLevel: "warning" };

rmSync("dist", { recursive: true, force: true });
await esbuild.build({ ...common, entryPoints: ["src/index.ts"], format: "esm", outfile: "dist/chatup.mjs", sourcemap: true });
await esbuild.build({ ...common, entryPoints: ["src/global.ts"], format: "iife", minify: true, outfile: "dist/chatup.min.js", sourcemap: true });
// For pages written for the original ChatUp: window.ChatUp.ChatUpProtocol is its surface.
await esbuild.build({ ...common, entryPoints: ["src/compat/global.ts"], format: "iife", minify: true, outfile: "dist/chatup-compat.min.js", sourcemap: true });
execFileSync("node", ["node_modules/typescript/bin/tsc", "-p", "tsconfig.json"], { stdio: "inherit" });
mkdirSync("dist", { recursive: true });
copyFileSync("example/index.html", "dist/index.html");
copyFileSync("example/original.html", "dist/original.html");

const min = readFileSync("dist/chatup.min.js");
console.log(`dist/chatup.min.js: ${min.length} bytes, ${gzipSync(min).length} bytes gzipped`);

if (process.argv.includes("--tests")) {
  rmSync("build/test", { recursive: true, force: true });
  const tests = readdirSync("test/unit").filter((f) => f.endsWith(".test.ts"));
  await esbuild.build({
    ...common,
    entryPoints: tests.map((f) => `test/unit/${f}`),
    format: "esm",
    platform: "node",
    outdir: "build/test",
    outExtension: { ".js": ".mjs" },
  });
}
