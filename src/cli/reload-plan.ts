/**
 * What a config reload changes: a pure function of the running config and the newly read one.
 * The plan says which secrets, identities, aliases and workload rules to add, change or remove,
 * and which settings differ but cannot change in a running process (they keep their running value
 * until a restart). `src/cli/reload.ts` applies it; nothing here touches the store or a stream.
 */
import { isDeepStrictEqual } from 'node:util';
import type { AliasNames } from '../secrets/store.js';
import type { BundleConfig, CertificateConfig, IdentityConfig, ServerConfig } from './config.js';

/**
 * File secrets that are read together: a certificate, or a bundle; a quick-mode bundle that takes
 * its trust domain from a certificate (`trustDomainFromCertificate`) belongs to that certificate.
 */
export interface FileGroup {
  /** The certificate's (or the lone bundle's) name. */
  key: string;
  certificates: CertificateConfig[];
  bundles: BundleConfig[];
}

export interface Changes<T> {
  add: T[];
  /** Canonical names no longer configured. */
  remove: string[];
  /** Same name, other settings (files, extra names, key type ...). */
  change: T[];
}

export interface ReloadPlan {
  /**
   * The config that runs once the plan is applied: the new config, except that every setting named
   * in `restartRequired` keeps its running value (so the next reload compares with what runs).
   */
  config: ServerConfig;
  /** Config fields that differ but cannot change live, e.g. `socket.path`, `admin`, `ca.backend`. */
  restartRequired: string[];
  files: Changes<FileGroup>;
  /** Canonical names of file secrets that are no longer configured (removed groups, or dropped from a changed group). */
  removedFileSecrets: string[];
  identities: Changes<IdentityConfig>;
  /** `start`: the new config is the first to need the CA; `stop`: the last identity using it is gone. */
  ca: 'keep' | 'start' | 'stop';
  /** New `ca.bundleNames`, when they changed (and the CA keeps running). */
  caBundleNames?: string[];
  /** New alias names or `default` / `rootBundle` targets, when any changed. */
  aliases?: { aliases: AliasNames; defaultCertificate?: string; rootBundle?: string };
  /** New workload entries and identity template, when either changed (authorization stays on). */
  authorization?: { workloads: ServerConfig['authorization']['workloads']; identityTemplate?: string };
  /** True when nothing is applied live (there may still be `restartRequired` settings). */
  empty: boolean;
}

/**
 * Fields applied live; every other field of `ServerConfig` (including ones added later) is
 * compared and, when it differs, named in `restartRequired`.
 */
const LIVE_TOP = new Set(['certificates', 'bundles', 'identities', 'aliases', 'defaultCertificate', 'rootBundle', 'ca', 'authorization']);
/** Parts of `ca` applied live (the rest selects and configures the backend, fixed at start). */
const LIVE_CA = new Set(['bundleNames']);
/** Parts of `authorization` applied live while authorization stays on. */
const LIVE_AUTHORIZATION = new Set(['workloads', 'identityTemplate', 'enabled']);

/** Names each config field as an operator writes it in the YAML file. */
const FIELD_NAMES: Record<string, string> = {
  expiryWarningMs: 'expiryWarning',
  'authorization.onDemandIdleSeconds': 'onDemandIdleSeconds',
  'authorization.onDemandLifetimeSeconds': 'onDemandLifetime',
  'authorization.kubernetes': 'attestation.kubernetes',
  'authorization.enabled': 'workloads / identityTemplate (turning authorization on or off)',
};

/** Whether a config runs a CA source (identities, or an identity template). */
export function needsCa(config: ServerConfig): boolean {
  return config.identities.length > 0 || config.authorization.identityTemplate !== undefined;
}

/**
 * The plan that takes a server running `running` to `next`. Pure: same inputs, same plan.
 * Rules (issue 13): secrets, identities, aliases and workload rules change live; settings of the
 * socket, admin endpoint, logging, watching, the CA backend and trust domain, and turning
 * authorization on or off need a restart. When the CA's backend or trust domain changes, the CA's
 * identities, bundle names and identity template are held too (they were validated against the
 * new trust domain) and named in `restartRequired`.
 */
export function planReload(running: ServerConfig, next: ServerConfig): ReloadPlan {
  const restartRequired: string[] = [];
  const config = structuredClone(running);
  const note = (field: string): void => {
    const name = FIELD_NAMES[field] ?? field;
    if (!restartRequired.includes(name)) restartRequired.push(name);
  };
  // Everything not applied live: named when it differs, kept at the running value.
  for (const key of new Set([...Object.keys(running), ...Object.keys(next)])) {
    if (LIVE_TOP.has(key)) continue;
    diffFields(key, (running as unknown as Record<string, unknown>)[key], (next as unknown as Record<string, unknown>)[key], note);
  }

  // The CA: before it runs, its settings are not in use, so a config that starts it takes them all.
  const caBefore = needsCa(running);
  const caAfter = needsCa(next);
  let caHeld = false;
  if (caBefore && caAfter) {
    for (const key of new Set([...Object.keys(running.ca), ...Object.keys(next.ca)])) {
      if (LIVE_CA.has(key)) continue;
      const a = (running.ca as unknown as Record<string, unknown>)[key];
      const b = (next.ca as unknown as Record<string, unknown>)[key];
      if (!isDeepStrictEqual(a, b)) {
        note(`ca.${key}`);
        if (key === 'backend' || key === 'trustDomain') caHeld = true;
      }
    }
  } else {
    config.ca = structuredClone(next.ca);
  }
  if (caHeld) {
    for (const [field, changed] of [
      ['identities', !isDeepStrictEqual(running.identities, next.identities)],
      ['ca.bundleNames', !isDeepStrictEqual(running.ca.bundleNames, next.ca.bundleNames)],
      ['identityTemplate', running.authorization.identityTemplate !== next.authorization.identityTemplate],
    ] as const) {
      if (changed) note(`${field} (held with the CA until restart)`);
    }
  } else {
    config.identities = structuredClone(next.identities);
    config.ca.bundleNames = [...next.ca.bundleNames];
  }

  // Authorization: rules change live; turning it on or off changes how connections are accepted.
  const auth = running.authorization;
  const nextAuth = next.authorization;
  let authorization: ReloadPlan['authorization'];
  for (const key of new Set([...Object.keys(auth), ...Object.keys(nextAuth)])) {
    if (LIVE_AUTHORIZATION.has(key)) continue;
    if (!isDeepStrictEqual((auth as unknown as Record<string, unknown>)[key], (nextAuth as unknown as Record<string, unknown>)[key])) note(`authorization.${key}`);
  }
  if (auth.enabled !== nextAuth.enabled) {
    note('authorization.enabled');
  } else if (auth.enabled) {
    const template = caHeld ? auth.identityTemplate : nextAuth.identityTemplate;
    if (!isDeepStrictEqual(auth.workloads, nextAuth.workloads) || template !== auth.identityTemplate) {
      authorization = { workloads: structuredClone(nextAuth.workloads), ...(template !== undefined ? { identityTemplate: template } : {}) };
      config.authorization.workloads = authorization.workloads;
      if (template === undefined) delete config.authorization.identityTemplate;
      else config.authorization.identityTemplate = template;
    }
  }

  // Aliases and the default / root-bundle choices.
  let aliases: ReloadPlan['aliases'];
  if (!isDeepStrictEqual(running.aliases, next.aliases) || running.defaultCertificate !== next.defaultCertificate || running.rootBundle !== next.rootBundle) {
    aliases = {
      aliases: { ...next.aliases },
      ...(next.defaultCertificate !== undefined ? { defaultCertificate: next.defaultCertificate } : {}),
      ...(next.rootBundle !== undefined ? { rootBundle: next.rootBundle } : {}),
    };
    config.aliases = { ...next.aliases };
    setOptional(config, 'defaultCertificate', next.defaultCertificate);
    setOptional(config, 'rootBundle', next.rootBundle);
  }

  config.certificates = structuredClone(next.certificates);
  config.bundles = structuredClone(next.bundles);
  const files = diffByKey(fileGroups(running), fileGroups(config), (g) => g.key);
  const kept = new Set(fileGroups(config).flatMap(groupNames));
  const removedFileSecrets = fileGroups(running).flatMap(groupNames).filter((n) => !kept.has(n));
  const identities = diffByKey(running.identities, config.identities, (i) => i.spiffeId);
  const ca: ReloadPlan['ca'] = caHeld ? 'keep' : !caBefore && needsCa(config) ? 'start' : caBefore && !needsCa(config) ? 'stop' : 'keep';
  const caBundleNames = caBefore && ca === 'keep' && !isDeepStrictEqual(running.ca.bundleNames, config.ca.bundleNames) ? [...config.ca.bundleNames] : undefined;
  const empty =
    files.add.length + files.remove.length + files.change.length + identities.add.length + identities.remove.length + identities.change.length === 0 &&
    ca === 'keep' &&
    !caBundleNames &&
    !aliases &&
    !authorization;
  return {
    config,
    restartRequired,
    files,
    removedFileSecrets,
    identities,
    ca,
    ...(caBundleNames ? { caBundleNames } : {}),
    ...(aliases ? { aliases } : {}),
    ...(authorization ? { authorization } : {}),
    empty,
  };
}

/** The file secrets of a config, grouped as they are read (see FileGroup). */
export function fileGroups(config: ServerConfig): FileGroup[] {
  const groups = new Map<string, FileGroup>();
  for (const c of config.certificates) groups.set(c.name, { key: c.name, certificates: [c], bundles: [] });
  for (const b of config.bundles) {
    const owner = b.trustDomainFromCertificate !== undefined ? groups.get(b.trustDomainFromCertificate) : undefined;
    if (owner) owner.bundles.push(b);
    else groups.set(b.name, { key: b.name, certificates: [], bundles: [b] });
  }
  return [...groups.values()];
}

/** Every canonical secret name of a file group. */
export function groupNames(group: FileGroup): string[] {
  return [...group.certificates.map((c) => c.name), ...group.bundles.map((b) => b.name)];
}

function diffByKey<T>(before: T[], after: T[], key: (t: T) => string): Changes<T> {
  const old = new Map(before.map((t) => [key(t), t]));
  const now = new Map(after.map((t) => [key(t), t]));
  return {
    add: after.filter((t) => !old.has(key(t))),
    remove: [...old.keys()].filter((k) => !now.has(k)),
    change: after.filter((t) => old.has(key(t)) && !isDeepStrictEqual(old.get(key(t)), t)),
  };
}

/** Names each differing field (one level into objects: `socket.path`, `watch.debounceMs`). */
function diffFields(field: string, a: unknown, b: unknown, note: (field: string) => void): void {
  if (isDeepStrictEqual(a, b)) return;
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (isObject(a) && isObject(b) && !field.includes('.')) {
    for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) diffFields(`${field}.${key}`, a[key], b[key], note);
    return;
  }
  note(field);
}

function setOptional<K extends 'defaultCertificate' | 'rootBundle'>(config: ServerConfig, key: K, value: string | undefined): void {
  if (value === undefined) delete config[key];
  else config[key] = value;
}
