// Find fields the Prometheus Operator's types do not have (misspelt or misplaced keys).
//
// The operator's JSON schemas (validate.mjs) check types, patterns and required fields but allow
// unknown keys, which an API server then prunes silently (a rule's misspelt `annotation:` would
// lose its runbook link) or, with server-side apply (helm 4), rejects. The same package ships
// TypeScript types generated from the operator's Go API; TypeScript's excess-property check on
// an object literal typed with them finds every unknown key. stdin: a JSON array of objects.
// stdout: a JSON array with one {kind, name, errors: [string]} per object. Exit 0 when no object
// has an unknown field (or a wrong type), 1 when one has, 2 when the check itself could not run.
//
//   node tests/helm/operator/fields.mjs < objects.json
import path from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MODULE = "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
const KINDS = ["PodMonitor", "PrometheusRule", "ServiceMonitor"];

let input = "";
process.stdin.setEncoding("utf8");
for await (const chunk of process.stdin) input += chunk;
let objects;
try {
  objects = JSON.parse(input);
  if (!Array.isArray(objects)) throw new Error("expected a JSON array of objects");
} catch (e) {
  process.stderr.write(`fields.mjs: unreadable input: ${e.message}\n`);
  process.exit(2);
}

// One typed constant per object; remember the lines each occupies to attribute diagnostics.
const results = objects.map((o) => ({ kind: o?.kind, name: o?.metadata?.name ?? null, errors: [] }));
const lines = [`import type { ${KINDS.map((k) => `I${k}`).join(", ")} } from "${MODULE}";`];
const spans = [];
objects.forEach((obj, i) => {
  if (obj?.apiVersion !== "monitoring.coreos.com/v1" || !KINDS.includes(obj?.kind)) {
    results[i].errors.push(`no types for ${obj?.apiVersion}/${obj?.kind}`);
    return;
  }
  const body = JSON.stringify(obj, null, 1).split("\n");
  spans.push({ index: i, first: lines.length, last: lines.length + body.length - 1 });
  body[0] = `export const o${i}: I${obj.kind} = ${body[0]}`;
  body[body.length - 1] += ";";
  lines.push(...body);
});
const source = lines.join("\n");

const file = path.join(HERE, "fields-check.ts"); // never written: served from memory below
const options = {
  strict: true,
  noEmit: true,
  skipLibCheck: true,
  types: [],
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
};
const host = ts.createCompilerHost(options);
const getSourceFile = host.getSourceFile.bind(host);
const readFile = host.readFile.bind(host);
const fileExists = host.fileExists.bind(host);
host.getSourceFile = (f, language, ...rest) =>
  f === file ? ts.createSourceFile(f, source, language) : getSourceFile(f, language, ...rest);
host.readFile = (f) => (f === file ? source : readFile(f));
host.fileExists = (f) => f === file || fileExists(f);

const program = ts.createProgram([file], options, host);
for (const d of ts.getPreEmitDiagnostics(program)) {
  const message = ts.flattenDiagnosticMessageText(d.messageText, " ");
  if (d.file?.fileName !== file || d.start === undefined) {
    process.stderr.write(`fields.mjs: the check could not run: ${message}\n`);
    process.exit(2);
  }
  const { line } = d.file.getLineAndCharacterOfPosition(d.start);
  const span = spans.find((s) => s.first <= line && line <= s.last);
  if (span === undefined) {
    process.stderr.write(`fields.mjs: the check could not run: ${message}\n`);
    process.exit(2);
  }
  results[span.index].errors.push(`${message} (at: ${lines[line].trim()})`);
}
process.stdout.write(JSON.stringify(results) + "\n");
process.exit(results.every((r) => r.errors.length === 0) ? 0 : 1);
