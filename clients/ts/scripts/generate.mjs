#!/usr/bin/env node
// Writes src/methods.gen.ts from spec/openrpc.json: a named type per component schema, a params
// interface and a result type per method, one camelCase method per row on the abstract class
// KeywardMethods, and the METHODS table. `npm run generate` runs it; test/generated.test.mjs runs
// generate() in memory and fails when the committed file differs, so spec and code cannot drift.
//
// Only the JSON-schema shapes the spec uses are mapped (type, type arrays with null, enum, $ref,
// oneOf, allOf of one, arrays, objects with properties); anything else fails loudly, so a new shape
// in the spec is a generator change, not a silent `unknown`.

import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const SPEC_PATH = resolve(here, '../../../spec/openrpc.json');
export const OUTPUT_PATH = resolve(here, '../src/methods.gen.ts');

/** Methods of the envelope itself: the session runs them, they get no typed method. */
const ENVELOPE_METHODS = new Set(['init_secure_api', 'encrypted_request_v3']);
/** Params that carry a secret besides those typed Password: they also take a Uint8Array. */
const SECRET_PARAMS = new Set(['mnemonic']);

const camel = (name) => name.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
const pascal = (name) => camel(name).replace(/^[a-z]/, (c) => c.toUpperCase());

/** A TSDoc comment of `text` at `indent`, or nothing. */
function doc(text, indent = '') {
  if (!text) return '';
  const clean = text.replace(/\*\//g, '*\\/').trim();
  const lines = wrap(clean, 100 - indent.length - 3);
  if (lines.length === 1) return `${indent}/** ${lines[0]} */\n`;
  return `${indent}/**\n${lines.map((l) => `${indent} * ${l}`.trimEnd()).join('\n')}\n${indent} */\n`;
}

function wrap(text, width) {
  const out = [];
  for (const paragraph of text.split('\n')) {
    let line = '';
    for (const word of paragraph.split(/\s+/).filter(Boolean)) {
      if (line && line.length + 1 + word.length > width) {
        out.push(line);
        line = word;
      } else {
        line = line ? `${line} ${word}` : word;
      }
    }
    out.push(line);
  }
  return out;
}

const literal = (value) => JSON.stringify(value);

function unsupported(schema, where) {
  throw new Error(`generate: unsupported schema at ${where}: ${JSON.stringify(schema)}`);
}

/** The TypeScript type of a JSON schema. */
function typeOf(schema, where) {
  if (schema.$ref) {
    const match = /^#\/components\/schemas\/([A-Za-z0-9_]+)$/.exec(schema.$ref);
    if (!match) unsupported(schema, where);
    return match[1];
  }
  if (schema.allOf) {
    if (schema.allOf.length !== 1) unsupported(schema, where);
    return typeOf(schema.allOf[0], where);
  }
  if (schema.oneOf) return schema.oneOf.map((s, i) => typeOf(s, `${where}.oneOf[${i}]`)).join(' | ');
  if (schema.enum) return schema.enum.map(literal).join(' | ');
  if (Array.isArray(schema.type)) {
    return schema.type.map((t) => typeOf({ ...schema, type: t }, where)).join(' | ');
  }
  switch (schema.type) {
    case 'string':
      return 'string';
    case 'integer':
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'null':
      return 'null';
    case 'array':
      if (!schema.items) return 'unknown[]';
      return `Array<${typeOf(schema.items, `${where}.items`)}>`;
    case 'object':
      return objectType(schema, where);
    default:
      return unsupported(schema, where);
  }
}

/** An object schema: its properties (required or optional), else a record. */
function objectType(schema, where) {
  const properties = schema.properties ?? {};
  const names = Object.keys(properties);
  if (names.length === 0) return 'Record<string, unknown>';
  const required = new Set(schema.required ?? []);
  const members = names.map((name) => {
    const optional = required.has(name) ? '' : '?';
    return `${name}${optional}: ${typeOf(properties[name], `${where}.${name}`)}`;
  });
  if (schema.additionalProperties !== false) members.push('[key: string]: unknown');
  return `{ ${members.join('; ')} }`;
}

/** A param's type: its schema's, plus Uint8Array where it carries a secret. */
function paramType(param, where) {
  const type = typeOf(param.schema, where);
  if (!SECRET_PARAMS.has(param.name)) return type;
  return type.includes('string') ? type.replace('string', 'Secret') : type;
}

/** The "Ok" value's schema of a method's V3 result wrapper. */
function okSchema(method) {
  const ok = method.result?.schema?.properties?.Ok;
  if (!ok) throw new Error(`generate: ${method.name}'s result has no Ok schema`);
  return ok;
}

/** The JSON kind of a result, for the shape check the generated method makes on the answer. */
function resultKind(schema, components) {
  let s = schema;
  while (s.$ref || s.allOf) s = s.$ref ? components[s.$ref.split('/').pop()] : s.allOf[0];
  const types = Array.isArray(s.type) ? s.type : s.type ? [s.type] : [];
  if (types.length !== 1 || s.oneOf) return 'any';
  return { integer: 'number' }[types[0]] ?? types[0];
}

function componentTypes(components) {
  let out = '';
  for (const [name, schema] of Object.entries(components)) {
    const type = name === 'Password' ? 'Secret' : typeOf(schema, `components.${name}`);
    out += doc(schema.description);
    out += `export type ${name} = ${type};\n\n`;
  }
  return out;
}

function paramsInterface(method) {
  const name = `${pascal(method.name)}Params`;
  let out = doc(`Params of \`${method.name}\` (wire names).`);
  if (method.params.length === 0) return `${out}export type ${name} = Record<string, never>;\n\n`;
  out += `export interface ${name} {\n`;
  for (const param of method.params) {
    out += doc(param.description, '  ');
    const optional = param.required ? '' : '?';
    out += `  ${param.name}${optional}: ${paramType(param, `${method.name}.${param.name}`)};\n`;
  }
  return `${out}}\n\n`;
}

function resultType(method) {
  const ok = okSchema(method);
  let out = doc(ok.description ?? `The Ok value of \`${method.name}\`.`);
  return `${out}export type ${pascal(method.name)}Result = ${typeOf(ok, `${method.name}.result`)};\n\n`;
}

function classMethod(method, components) {
  const pas = pascal(method.name);
  const summary = [method.summary, method.description].filter(Boolean).join('\n\n');
  let out = doc(`${summary}\n\nRole: ${method['x-keyward-role']}; ${method['x-keyward-speed']}.`, '  ');
  const kind = resultKind(okSchema(method), components);
  const args = method.params.length === 0 ? '' : `params: ${pas}Params`;
  const value = method.params.length === 0 ? '{}' : 'params';
  out += `  async ${camel(method.name)}(${args}): Promise<${pas}Result> {\n`;
  out += `    const value = await this.call(${literal(method.name)}, ${value});\n`;
  out += `    return expectKind<${pas}Result>(value, ${literal(kind)}, ${literal(method.name)});\n`;
  out += '  }\n\n';
  return out;
}

/** The whole of src/methods.gen.ts for the spec's text. */
export function generate(specText) {
  const spec = JSON.parse(specText);
  const components = spec.components?.schemas ?? {};
  const methods = spec.methods.filter((m) => !ENVELOPE_METHODS.has(m.name));
  let out = `// GENERATED by scripts/generate.mjs from spec/openrpc.json (${spec.info?.title ?? ''} ${spec.info?.version ?? ''}).
// Do not edit: change the spec and run \`npm run generate\`; test/generated.test.mjs fails when they differ.

import { expectKind } from './result.js';

/** A secret given as a string or as its UTF-8 bytes (a Uint8Array you can zero after the call). */
export type Secret = string | Uint8Array;

`;
  // The roles: the spec's own schema when it has one, else the three names.
  if (!('Role' in components)) out += "/** The least role that may call a method. */\nexport type Role = 'reader' | 'signer' | 'owner';\n\n";
  out += componentTypes(components);
  for (const method of methods) {
    out += paramsInterface(method);
    out += resultType(method);
  }
  out += '/** Every method of the spec: wire name, least role, speed (slow = runs a KDF or writes), params in order. */\n';
  out += 'export const METHODS = [\n';
  for (const m of methods) {
    const params = m.params.map((p) => literal(p.name)).join(', ');
    out += `  { name: ${literal(m.name)}, method: ${literal(camel(m.name))}, role: ${literal(m['x-keyward-role'])}, speed: ${literal(m['x-keyward-speed'])}, params: [${params}] },\n`;
  }
  out += '] as const;\n\n';
  out += '/** A method\'s wire name. */\nexport type MethodName = (typeof METHODS)[number][\'name\'];\n\n';
  out += '/** Params by wire name. */\nexport interface MethodParams {\n';
  for (const m of methods) out += `  ${m.name}: ${pascal(m.name)}Params;\n`;
  out += '}\n\n/** Results by wire name. */\nexport interface MethodResults {\n';
  for (const m of methods) out += `  ${m.name}: ${pascal(m.name)}Result;\n`;
  out += '}\n\n';
  out += '/** One typed method per method of the spec; a subclass provides call(). */\n';
  out += 'export abstract class KeywardMethods {\n';
  out += '  /** Calls a method by its wire name with a params object (or array); its Ok value. */\n';
  out += '  abstract call(method: string, params: object): Promise<unknown>;\n\n';
  for (const method of methods) out += classMethod(method, components);
  out = out.replace(/\n\n$/, '\n');
  out += '}\n';
  return out;
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (isMain) {
  writeFileSync(OUTPUT_PATH, generate(readFileSync(SPEC_PATH, 'utf8')));
  console.log(`wrote ${OUTPUT_PATH}`);
}
