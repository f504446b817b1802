// The shape check a generated method makes on its Ok value before handing it to the caller typed.

import { protocolError } from './errors.js';
import { isObject } from './json.js';

/** The JSON kind of a method's Ok value, from its schema (`any` when the schema allows several). */
export type ResultKind = 'null' | 'string' | 'number' | 'boolean' | 'array' | 'object' | 'any';

function hasKind(value: unknown, kind: ResultKind): boolean {
  switch (kind) {
    case 'null':
      return value === null;
    case 'string':
    case 'number':
    case 'boolean':
      return typeof value === kind;
    case 'array':
      return Array.isArray(value);
    case 'object':
      return isObject(value);
    case 'any':
      return true;
  }
}

/**
 * `value` typed as the method's result once its top-level JSON kind is the schema's. Deeper members
 * are the server's word (spec/openrpc.json); this check keeps a wrong kind from reaching the caller
 * as a typed value and turns it into a KeywardError.
 */
export function expectKind<T>(value: unknown, kind: ResultKind, method: string): T {
  if (!hasKind(value, kind)) throw protocolError(`${method} answered a ${describe(value)} where the spec says ${kind}`);
  // The one unchecked step: the kind matched, the members are as the spec says.
  return value as T;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}
