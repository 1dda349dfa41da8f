// Parses and validates an AsyncAPI document with the official parser
// (@asyncapi/parser: the AsyncAPI JSON Schemas plus its Spectral rules).
// Usage: node validate.mjs FILE  -> prints a JSON report; exit 1 on any error.
import { readFileSync } from 'node:fs';
import { Parser } from '@asyncapi/parser';

const file = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(file, 'utf8'), { source: file });
const severity = ['error', 'warning', 'info', 'hint'];
const report = {
  valid: document !== undefined && !diagnostics.some((d) => d.severity === 0),
  version: document ? document.version() : null,
  channels: document ? document.channels().length : 0,
  operations: document ? document.operations().length : 0,
  messages: document ? document.components().messages().length : 0,
  diagnostics: diagnostics.map((d) => ({
    severity: severity[d.severity], code: d.code, message: d.message, path: d.path.join('.'),
  })),
};
console.log(JSON.stringify(report, null, 2));
process.exit(report.valid ? 0 : 1);
