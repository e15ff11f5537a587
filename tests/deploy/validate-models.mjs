// Validates custom resources against the models of @kubernetes-models (npm):
// KEDA's ScaledObject and TriggerAuthentication (@kubernetes-models/keda) and
// the Prometheus Operator's PodMonitor (@kubernetes-models/prometheus-operator).
//
//   node validate-models.mjs <node_modules> <objects.json>
//
// <objects.json> holds an array of objects (tests/deploy.rs writes it from
// the rendered manifests). Each model's own validate() checks types and
// required fields; since the CRDs' schemas let unknown fields through, every
// field is also looked up in the model's type declarations (.d.ts), so a
// misspelt field fails too. Prints one line per object; exits 1 if any is
// invalid, 2 on a kind it has no model for.
import { readFileSync, existsSync } from "node:fs";
import { dirname, join, basename } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, objectsFile] = process.argv.slice(2);
if (!modules || !objectsFile) {
  console.error("usage: node validate-models.mjs <node_modules> <objects.json>");
  process.exit(2);
}

const MODELS = {
  "keda.sh/v1alpha1/ScaledObject": "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject",
  "keda.sh/v1alpha1/TriggerAuthentication": "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication",
  "monitoring.coreos.com/v1/PodMonitor": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor",
};

// The fields of a declared model type: name -> the .d.ts file of its type
// (or null for a scalar or a free map); null if the type is no model.
const declared = new Map();
function fieldsOf(file) {
  if (declared.has(file)) return declared.get(file);
  declared.set(file, null);
  const text = readFileSync(file, "utf8");
  const imports = new Map();
  for (const [, names, spec] of text.matchAll(/import \{ ([^}]+) \} from "([^"]+)";/g)) {
    for (const name of names.split(",").map((n) => n.trim())) imports.set(name, spec);
  }
  const resolve = (name) => {
    const spec = imports.get(name);
    if (!spec) return null;
    const path = spec.startsWith(".")
      ? join(dirname(file), spec.replace(/\.js$/, ".d.ts"))
      : join(modules, spec.replace(/\.js$/, "") + ".d.ts");
    return existsSync(path) ? path : null;
  };
  const body = /export declare class \w+ extends Model<[^>]*>[^{]*\{([\s\S]*?)\n\}/.exec(text);
  if (!body) {
    const alias = /export type I\w+ = (I\w+);/.exec(text);
    const target = alias && resolve(alias[1]);
    const fields = target ? fieldsOf(target) : null;
    declared.set(file, fields);
    return fields;
  }
  const fields = new Map();
  for (const line of body[1].split("\n")) {
    const field = /^    "([^"]+)"\??: (.*?);?$/.exec(line);
    if (!field) continue;
    const type = /^(?:Array<)?(I\w+)>?$/.exec(field[2]);
    fields.set(field[1], type ? resolve(type[1]) : null);
  }
  declared.set(file, fields);
  return fields;
}

function unknownFields(value, file, path, found) {
  if (value === null || typeof value !== "object" || !file) return;
  if (Array.isArray(value)) {
    value.forEach((item, index) => unknownFields(item, file, `${path}[${index}]`, found));
    return;
  }
  const fields = fieldsOf(file);
  if (!fields) return;
  for (const [key, item] of Object.entries(value)) {
    if (!fields.has(key)) {
      found.push(`${path}.${key} is not a field of ${basename(file, ".d.ts")}`);
    } else {
      unknownFields(item, fields.get(key), `${path}.${key}`, found);
    }
  }
}

const objects = JSON.parse(readFileSync(objectsFile, "utf8"));
let invalid = false;
for (const object of objects) {
  const what = `${object.kind}/${object.metadata?.name}`;
  const model = MODELS[`${object.apiVersion}/${object.kind}`];
  if (!model) {
    console.log(`no model for ${object.apiVersion} ${what}`);
    process.exit(2);
  }
  const module = await import(pathToFileURL(join(modules, model + ".js")).href);
  const Model = module[object.kind];
  const problems = [];
  try {
    new Model(object).validate();
  } catch (error) {
    problems.push(error.message);
  }
  const declaration = join(modules, model + ".d.ts");
  if (!fieldsOf(declaration)?.has("spec")) {
    problems.push(`cannot read the fields of ${declaration}`);
  }
  unknownFields(object, declaration, object.kind, problems);
  if (problems.length) {
    invalid = true;
    console.log(`invalid ${what}: ${problems.join("; ")}`);
  } else {
    console.log(`valid ${what}`);
  }
}
process.exit(invalid ? 1 : 0);
