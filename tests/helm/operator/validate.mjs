// Validate Prometheus Operator custom resources against the operator's own schemas.
//
// kubernetes-validate only warns on custom resources, so the chart tests pipe each rendered
// PrometheusRule/ServiceMonitor here. stdin: a JSON array of objects. stdout: a JSON array with one
// {kind, name, errors: [string]} per object, in order. Exit 0 when every object is valid, 1 when
// any is not (an object of a kind without a schema here counts as invalid), 2 on unreadable input.
//
//   node tests/helm/operator/validate.mjs < objects.json
import {
  PodMonitor,
  PrometheusRule,
  ServiceMonitor,
} from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const MODELS = { PodMonitor, PrometheusRule, ServiceMonitor };

function validate(obj) {
  const kind = obj?.kind;
  const name = obj?.metadata?.name ?? null;
  if (obj?.apiVersion !== "monitoring.coreos.com/v1" || !(kind in MODELS)) {
    return {
      kind,
      name,
      errors: [`no schema for ${obj?.apiVersion}/${kind} (known: monitoring.coreos.com/v1 ${Object.keys(MODELS).join(", ")})`],
    };
  }
  try {
    new MODELS[kind](obj).validate();
    return { kind, name, errors: [] };
  } catch (e) {
    // ValidationError from @kubernetes-models/validate carries ajv's error list.
    const errors = Array.isArray(e.errors)
      ? e.errors.map((err) => `${err.instancePath || "/"}: ${err.message}`)
      : [String(e.message ?? e)];
    return { kind, name, errors };
  }
}

let input = "";
process.stdin.setEncoding("utf8");
for await (const chunk of process.stdin) input += chunk;
let objects;
try {
  objects = JSON.parse(input);
  if (!Array.isArray(objects)) throw new Error("expected a JSON array of objects");
} catch (e) {
  process.stderr.write(`validate.mjs: unreadable input: ${e.message}\n`);
  process.exit(2);
}
const results = objects.map(validate);
process.stdout.write(JSON.stringify(results) + "\n");
process.exit(results.every((r) => r.errors.length === 0) ? 0 : 1);
