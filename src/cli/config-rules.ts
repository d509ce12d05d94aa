/**
 * The rules that relate config fields to each other, in one place: names used twice, aliases,
 * references to configured names, the CA's trust domain, settings that apply only together.
 * Each problem names the field path; values are quoted only when they cannot be pasted secrets.
 */
import { quoted } from '../core/config-schema.js';
import { IdentityTemplate } from '../authorization/entitlements.js';
import { CA_BACKEND_TYPES } from '../ca/registry.js';
import { parseSpiffeId } from '../x509/spiffe.js';
import type { ConfigFile } from './config-schema.js';

/** Every field optional and every list item possibly missing: the schema's output with invalid fields removed. */
export type Lenient<T> = T extends ReadonlyArray<infer U> ? Array<Lenient<U> | undefined> : T extends object ? { [K in keyof T]?: Lenient<T[K]> } : T;
export type LenientConfigFile = Lenient<ConfigFile>;

export interface ConfigProblem {
  field: string;
  message: string;
}

const ALIAS_KEYS = ['defaultCertificate', 'rootBundle', 'allBundles'] as const;

/**
 * Problems between fields of `file` (the parsed config, invalid fields removed). `raw` is the
 * document as written, for rules about what the operator set (rather than a default).
 */
export function crossFieldProblems(file: LenientConfigFile, raw: unknown): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const problem = (field: string, message: string): void => void problems.push({ field, message });
  const written = (key: string): boolean => raw !== null && typeof raw === 'object' && (raw as Record<string, unknown>)[key] != null;
  const ca = file.ca ?? {};
  const certificates = file.certificates ?? [];
  const bundles = file.bundles ?? [];
  const identities = file.identities ?? [];

  // Two aliases with one name would serve one kind of secret to requests for the other.
  const aliases = file.aliases ?? {};
  ALIAS_KEYS.forEach((key, i) => {
    const first = ALIAS_KEYS.slice(0, i).find((other) => aliases[other] !== undefined && aliases[other] === aliases[key]);
    if (first) problem(`aliases.${key}`, `has the same name as aliases.${first}; each alias needs its own name`);
  });

  // The chosen backend's settings, when its schema has no default.
  for (const type of CA_BACKEND_TYPES) {
    if (ca.backend === type.name && ca[type.key] === undefined) problem(`ca.${type.key}`, `is required when ca.backend is ${type.name}`);
  }

  identities.forEach((id, i) => {
    const parsed = id?.spiffeId ? parseSpiffeId(id.spiffeId) : undefined;
    if (parsed && ca.trustDomain && parsed.trustDomain !== ca.trustDomain) {
      problem(`identities[${i}].spiffeId`, `is not in the CA's trust domain ${ca.trustDomain} (set ca.trustDomain)`);
    }
  });

  // Every secret name (and extra name) is served once.
  const names = new Map<string, string>();
  const claim = (name: string | undefined, field: string): void => {
    if (name === undefined) return;
    const previous = names.get(name);
    if (previous) problem(field, `the same name is already used by ${previous}`);
    else names.set(name, field);
  };
  const claimAll = (list: Array<string | undefined> | undefined, field: string): void => list?.forEach((n, j) => claim(n, `${field}[${j}]`));
  certificates.forEach((c, i) => {
    claim(c?.name, `certificates[${i}].name`);
    claimAll(c?.names, `certificates[${i}].names`);
  });
  bundles.forEach((b, i) => {
    claim(b?.name, `bundles[${i}].name`);
    claimAll(b?.names, `bundles[${i}].names`);
  });
  identities.forEach((id, i) => {
    claim(id?.spiffeId, `identities[${i}].spiffeId`);
    claimAll(id?.names, `identities[${i}].names`);
  });
  if (identities.length > 0 && ca.trustDomain) {
    claim(`spiffe://${ca.trustDomain}`, 'ca.trustDomain (its bundle)');
    claimAll(ca.bundleNames, 'ca.bundleNames');
  }

  // Workload rules name configured identities (a file certificate may be named by the SPIFFE ID in its file).
  const configured = new Set<string | undefined>([
    ...certificates.flatMap((c) => [c?.name, ...(c?.names ?? [])]),
    ...identities.flatMap((id) => [id?.spiffeId, ...(id?.names ?? [])]),
  ]);
  file.workloads?.forEach((w, i) =>
    w?.identities?.forEach((id, j) => {
      if (id === undefined || configured.has(id)) return;
      if (!parseSpiffeId(id) || certificates.length === 0) problem(`workloads[${i}].identities[${j}]`, `${quoted(id)} is not a configured certificate or identity`);
    }),
  );

  if (file.identityTemplate !== undefined && ca.trustDomain) {
    const parsed = IdentityTemplate.parse(file.identityTemplate, ca.trustDomain);
    if ('problem' in parsed) problem('identityTemplate', parsed.problem);
    if (certificates.length > 0 && identities.length === 0 && !written('ca')) {
      problem('identityTemplate', 'identities from a template are issued by the CA: configure ca (the embedded CA by default) rather than only certificate files');
    }
  }
  if (!written('identityTemplate')) {
    if (written('onDemandIdleSeconds')) problem('onDemandIdleSeconds', 'applies only with identityTemplate');
    if (written('onDemandLifetime')) problem('onDemandLifetime', 'applies only with identityTemplate');
  }

  for (const key of ALIAS_KEYS) {
    const alias = aliases[key];
    const owner = alias !== undefined ? names.get(alias) : undefined;
    if (owner) problem(owner, `the same name is reserved as an alias (aliases.${key})`);
  }
  if (file.default !== undefined && !certificates.some((c) => c?.name === file.default)) problem('default', 'is not the name of a configured certificate');
  if (file.rootBundle !== undefined && !bundles.some((b) => b?.name === file.rootBundle)) problem('rootBundle', 'is not the name of a configured bundle');
  return problems;
}
