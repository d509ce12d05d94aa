import fs from 'node:fs';

let out;

export async function initialize(data) {
  out = data.out;
}

export async function resolve(specifier, context, next) {
  const result = await next(specifier, context);
  if (out) fs.appendFileSync(out, `${result.url}\n`);
  return result;
}
