import { parseSpiffeId } from '../x509/spiffe.js';
import { describeCaller, type Caller } from './caller.js';

/**
 * Which identities a caller may receive: registration entries (selectors -> identities, as SPIRE's
 * registration entries) and an optional identity template (as spire-controller-manager's
 * ClusterSPIFFEID template). Pure data and functions: no store, no gRPC.
 */

/** One `workloads:` entry of the config file. */
export interface WorkloadEntry {
  /** A caller whose selectors include every one of these matches the entry. */
  selectors: string[];
  /** SPIFFE IDs (or configured secret names) the matching caller may receive. */
  identities: string[];
}

/** What one attested caller is granted. */
export interface Grant {
  /** Identities the caller may receive, in entry order then the templated one; the first is its `default`. */
  identities: string[];
  /** The identity rendered from the template (issued on demand), when the template applies. */
  templated?: string;
  /** Why the template did not apply (a placeholder the caller has no selector for), when it did not. */
  templateProblem?: string;
}

/** Every entry whose selectors are a subset of the caller's selectors, in config order. */
export function matchingEntries(entries: readonly WorkloadEntry[], callerSelectors: readonly string[]): WorkloadEntry[] {
  const have = new Set(callerSelectors);
  return entries.filter((e) => e.selectors.length > 0 && e.selectors.every((s) => have.has(s)));
}

/**
 * An identity template such as `spiffe://{trustDomain}/ns/{k8s:ns}/sa/{k8s:sa}`. `{trustDomain}` is
 * the CA's trust domain; any other `{type:name}` placeholder takes the value of the caller's
 * selector `type:name:VALUE` (e.g. `{k8s:ns}` <- `k8s:ns:shop`, `{k8s:pod-label:app}` <-
 * `k8s:pod-label:app:web`, `{unix:uid}` <- `unix:uid:1001`).
 */
export class IdentityTemplate {
  private constructor(
    readonly text: string,
    /** Literal text and placeholder names, alternating: literal, name, literal, ... */
    private readonly parts: string[],
  ) {}

  /** The placeholders the template uses (besides `trustDomain`). */
  get placeholders(): string[] {
    return this.parts.filter((_, i) => i % 2 === 1 && this.parts[i] !== 'trustDomain');
  }

  /**
   * Parses and checks a template: every placeholder is `trustDomain` or a selector type such as
   * `k8s:ns`, and filling each with a sample value gives a workload SPIFFE ID in `trustDomain`.
   * Returns the template or a message for the config field.
   */
  static parse(text: string, trustDomain: string): IdentityTemplate | { problem: string } {
    const parts: string[] = [];
    const re = /\{([^{}]*)\}/g;
    let last = 0;
    for (let m = re.exec(text); m; m = re.exec(text)) {
      parts.push(text.slice(last, m.index), m[1] ?? '');
      last = m.index + m[0].length;
    }
    parts.push(text.slice(last));
    if (parts.some((p, i) => i % 2 === 0 && /[{}]/.test(p))) return { problem: `unbalanced { } in ${JSON.stringify(text)}` };
    for (let i = 1; i < parts.length; i += 2) {
      const name = parts[i] ?? '';
      if (name !== 'trustDomain' && !/^[a-z0-9_-]+:[A-Za-z0-9_.:/-]+$/.test(name)) {
        return { problem: `placeholder {${name}} is neither {trustDomain} nor a selector type such as {k8s:ns}, {k8s:sa}, {unix:uid}` };
      }
    }
    const template = new IdentityTemplate(text, parts);
    if (template.placeholders.length === 0) return { problem: `${JSON.stringify(text)} has no selector placeholder (every caller would get the same identity; use workloads instead)` };
    const sample = template.fill((name) => (name === 'trustDomain' ? trustDomain : 'x'));
    const id = sample === undefined ? undefined : parseSpiffeId(sample);
    if (!id || id.path === '') return { problem: `${JSON.stringify(text)} does not give a workload SPIFFE ID (spiffe://${trustDomain}/...)` };
    if (id.trustDomain !== trustDomain) return { problem: `${JSON.stringify(text)} is not in the CA's trust domain ${trustDomain} (use {trustDomain})` };
    return template;
  }

  /**
   * The caller's identity, or why there is none: a placeholder without a selector, several different
   * values for one placeholder, or a value that is not a SPIFFE path segment (no `/`, `.` or `..`).
   */
  render(selectors: readonly string[], trustDomain: string): { spiffeId: string } | { problem: string } {
    const problems: string[] = [];
    const spiffeId = this.fill((name) => {
      if (name === 'trustDomain') return trustDomain;
      const prefix = `${name}:`;
      const values = [...new Set(selectors.filter((s) => s.startsWith(prefix)).map((s) => s.slice(prefix.length)))];
      if (values.length === 0) problems.push(`the caller has no ${name} selector for {${name}}`);
      else if (values.length > 1) problems.push(`the caller has ${values.length} different ${name} selectors for {${name}}`);
      else if (!/^[A-Za-z0-9._-]+$/.test(values[0]!) || values[0] === '.' || values[0] === '..') {
        problems.push(`the caller's ${name} selector value ${JSON.stringify(values[0])} is not a SPIFFE ID path segment`);
      } else return values[0]!;
      return undefined;
    });
    if (problems.length > 0 || spiffeId === undefined) return { problem: `identity template ${this.text}: ${problems.join('; ')}` };
    if (!parseSpiffeId(spiffeId)?.path) return { problem: `identity template ${this.text} gives ${JSON.stringify(spiffeId)}, not a SPIFFE ID` };
    return { spiffeId };
  }

  private fill(value: (name: string) => string | undefined): string | undefined {
    let out = '';
    let complete = true;
    this.parts.forEach((part, i) => {
      if (i % 2 === 0) out += part;
      else {
        const v = value(part);
        if (v === undefined) complete = false;
        else out += v;
      }
    });
    return complete ? out : undefined;
  }
}

/** The authorization policy: entries, an optional template, the trust domain the template uses. */
export interface AuthorizationPolicy {
  workloads: WorkloadEntry[];
  template?: IdentityTemplate;
  trustDomain: string;
}

/** What `caller` may receive under `policy` (identities deduplicated, entry order kept). */
export function grantFor(policy: AuthorizationPolicy, caller: Caller): Grant {
  const identities: string[] = [];
  for (const entry of matchingEntries(policy.workloads, caller.selectors)) for (const id of entry.identities) if (!identities.includes(id)) identities.push(id);
  if (!policy.template) return { identities };
  const rendered = policy.template.render(caller.selectors, policy.trustDomain);
  if ('problem' in rendered) return { identities, templateProblem: rendered.problem };
  if (!identities.includes(rendered.spiffeId)) identities.push(rendered.spiffeId);
  return { identities, templated: rendered.spiffeId };
}

/** The refusal for a caller granted nothing (bounded length; no secret content, only the caller). */
export function noIdentityReason(caller: Caller, grant: Grant): string {
  const why = grant.templateProblem ? ` and ${grant.templateProblem}` : '';
  return bounded(`caller ${describeCaller(caller)} matches no workload entry${why}; it is granted no identity and no trust bundle`);
}

/** The refusal for one secret the caller is not entitled to. */
export function notEntitledReason(secret: string, caller: Caller): string {
  return bounded(`secret ${JSON.stringify(secret)} is not granted to caller ${describeCaller(caller)}`);
}

const MAX_REASON = 900;

function bounded(s: string): string {
  return s.length <= MAX_REASON ? s : `${s.slice(0, MAX_REASON - 3)}...`;
}
