// Checks a value against a JSON schema as the server publishes it for the upload's
// metadata (made from its own model): the keywords that schema uses, no more. A test
// walks the server's schema and fails when it uses a keyword that is not listed here.

export const KEYWORDS = [
  "$defs", "$ref", "additionalProperties", "anyOf", "const", "default", "description",
  "enum", "exclusiveMaximum", "exclusiveMinimum", "items", "maxItems", "maxLength",
  "maximum", "minItems", "minLength", "minimum", "pattern", "properties", "propertyNames",
  "required", "title", "type",
];

function typeOf(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value; // string, boolean, object
}

function typeMatches(want, value) {
  const got = typeOf(value);
  const wants = Array.isArray(want) ? want : [want];
  return wants.some((w) => w === got || (w === "number" && got === "integer"));
}

const chars = (s) => [...s].length; // JSON schema counts code points

/**
 * Errors of ``value`` against ``schema`` (``root`` resolves $ref), each {path, message},
 * path as a list of keys. An empty list: the value passes.
 */
export function validate(schema, value, root = schema, path = []) {
  const errors = [];
  const fail = (message) => errors.push({ path, message });
  if (schema.$ref) {
    const target = schema.$ref.replace(/^#\//, "").split("/").reduce((node, key) => node[key], root);
    errors.push(...validate(target, value, root, path));
  }
  if (schema.anyOf) {
    const tries = schema.anyOf.map((s) => validate(s, value, root, path));
    if (!tries.some((e) => e.length === 0)) {
      const closest = tries.reduce((a, b) => (b.length < a.length ? b : a));
      errors.push(...closest);
    }
  }
  if (schema.type && !typeMatches(schema.type, value)) {
    fail(`must be ${Array.isArray(schema.type) ? schema.type.join(" or ") : schema.type === "object" ? "an object" : schema.type === "array" ? "a list" : `a ${schema.type}`}`);
    return errors;
  }
  if (schema.enum && !schema.enum.some((v) => v === value)) fail(`must be one of ${schema.enum.join(", ")}`);
  if ("const" in schema && schema.const !== value) fail(`must be ${JSON.stringify(schema.const)}`);
  if (typeof value === "string") {
    if (schema.minLength !== undefined && chars(value) < schema.minLength) {
      fail(schema.minLength === 1 ? "must not be empty" : `must be at least ${schema.minLength} characters`);
    }
    if (schema.maxLength !== undefined && chars(value) > schema.maxLength) fail(`must be at most ${schema.maxLength} characters`);
    if (schema.pattern && !new RegExp(schema.pattern, "u").test(value)) fail(`must match ${schema.pattern}`);
  }
  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) fail(`must be at least ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) fail(`must be at most ${schema.maximum}`);
    if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) fail(`must be more than ${schema.exclusiveMinimum}`);
    if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) fail(`must be less than ${schema.exclusiveMaximum}`);
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) fail(`must hold at least ${schema.minItems} items`);
    if (schema.maxItems !== undefined && value.length > schema.maxItems) fail(`must hold at most ${schema.maxItems} items`);
    if (schema.items) value.forEach((item, i) => errors.push(...validate(schema.items, item, root, [...path, i])));
  }
  if (typeOf(value) === "object") {
    for (const key of schema.required || []) {
      if (!(key in value)) errors.push({ path: [...path, key], message: "is required" });
    }
    const props = schema.properties || {};
    for (const [key, item] of Object.entries(value)) {
      if (schema.propertyNames) {
        for (const e of validate(schema.propertyNames, key, root, [...path, key])) {
          errors.push({ path: e.path, message: `name ${JSON.stringify(key)} ${e.message}` });
        }
      }
      if (key in props) {
        errors.push(...validate(props[key], item, root, [...path, key]));
      } else if (schema.additionalProperties === false) {
        errors.push({ path: [...path, key], message: "is not a field this takes" });
      } else if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
        errors.push(...validate(schema.additionalProperties, item, root, [...path, key]));
      }
    }
  }
  return errors;
}
