import type { Logger } from '../core/logger.js';
import type { Caller } from './caller.js';
import { CallerCatalog, type CallerDecisions, type StoreView } from './caller-catalog.js';
import { grantFor, type AuthorizationPolicy } from './entitlements.js';
import type { OnDemandIdentities, OnDemandStatus } from './on-demand.js';

/** One connection's caller and what it was granted or refused, as /status shows it. */
export interface ConnectionReport {
  peer: string;
  pid: number;
  uid: number;
  gid: number;
  selectors: string[];
  /** Identities the caller may receive (its `default` first). */
  identities: string[];
  streams: number;
  /** Certificate names served to it. */
  granted: string[];
  refused: Array<{ name: string; reason: string; at: string }>;
  since: string;
}

export interface AuthorizationReport {
  enabled: boolean;
  /** What authorization means for this server, in one sentence for an operator. */
  summary: string;
  workloads?: number;
  identityTemplate?: string;
  connections?: ConnectionReport[];
  /** The last connections that were refused something and have gone (newest last). */
  recentlyRefused?: ConnectionReport[];
  onDemand?: OnDemandStatus[];
}

/** With no `workloads` / `identityTemplate`: the warning logged at start and shown in /status. */
export const AUTHORIZATION_OFF =
  'authorization is off (no workloads or identityTemplate in the config): every process that can open the socket gets every identity';

interface ConnectionRecord {
  report: ConnectionReport;
  refusedNames: Set<string>;
}

/** Keeps at most this many refusals per connection in /status (a misbehaving client cannot grow memory). */
const MAX_REFUSALS = 20;
/** How many gone connections with refusals /status remembers. */
const MAX_RECENTLY_REFUSED = 20;

/**
 * Per-caller catalogs (contract 2's `catalogFor`) under one policy, and the record of every
 * connected caller for logs and /status. Never holds key material: names and reasons only.
 */
export class Authorization {
  private readonly connections = new Map<string, ConnectionRecord>();
  private readonly recentlyRefused: ConnectionReport[] = [];
  /** Every open stream's view, so a new policy reaches the streams already open. */
  private readonly catalogs = new Set<CallerCatalog>();

  constructor(
    private readonly opts: {
      store: StoreView;
      /** Replaced by `setPolicy`. */
      policy: AuthorizationPolicy;
      onDemand?: OnDemandIdentities;
      log: Logger;
    },
  ) {}

  /** The catalog a stream (or fetch) from `caller` on connection `peer` sees. */
  catalogFor(caller: Caller | undefined, origin: { id: number; peer: string }): CallerCatalog {
    // The service only asks once attestation succeeded; an unknown caller gets nothing.
    const who: Caller = caller ?? { pid: 0, uid: -1, gid: -1, selectors: [] };
    const grant = grantFor(this.opts.policy, who);
    let record = this.connections.get(origin.peer);
    if (!record) {
      record = {
        report: { peer: origin.peer, pid: who.pid, uid: who.uid, gid: who.gid, selectors: who.selectors, identities: grant.identities, streams: 0, granted: [], refused: [], since: new Date().toISOString() },
        refusedNames: new Set(),
      };
      this.connections.set(origin.peer, record);
      this.opts.log.info('caller authorized', {
        peer: origin.peer,
        pid: who.pid,
        uid: who.uid,
        gid: who.gid,
        selectors: who.selectors,
        identities: grant.identities,
        ...(grant.templateProblem ? { templateProblem: grant.templateProblem } : {}),
      });
    }
    record.report.streams += 1;
    const rec = record;
    const log = this.opts.log;
    let closed = false;
    const decisions: CallerDecisions = {
      granted: (name) => {
        if (rec.report.granted.includes(name)) return;
        rec.report.granted.push(name);
        log.info('secret granted', { peer: origin.peer, stream: origin.id, pid: who.pid, uid: who.uid, secret: name });
      },
      refused: (name, reason) => {
        if (rec.refusedNames.has(name)) return;
        rec.refusedNames.add(name);
        if (rec.report.refused.length < MAX_REFUSALS) rec.report.refused.push({ name, reason, at: new Date().toISOString() });
        log.warn('secret refused', { peer: origin.peer, stream: origin.id, pid: who.pid, uid: who.uid, selectors: who.selectors, secret: name, reason });
      },
      closed: () => {
        if (closed) return;
        closed = true;
        this.catalogs.delete(catalog);
        rec.report.streams -= 1;
        if (rec.report.streams === 0 && this.connections.get(origin.peer) === rec) {
          this.connections.delete(origin.peer);
          if (rec.report.refused.length > 0) {
            // One entry per connection (a refused caller's streams come and go one by one).
            const same = this.recentlyRefused.findIndex((r) => r.peer === origin.peer);
            if (same >= 0) this.recentlyRefused.splice(same, 1);
            this.recentlyRefused.push({ ...rec.report, streams: 0 });
            if (this.recentlyRefused.length > MAX_RECENTLY_REFUSED) this.recentlyRefused.shift();
          }
        }
      },
    };
    const catalog = new CallerCatalog(this.opts.store, who, grant, this.opts.onDemand, decisions);
    this.catalogs.add(catalog);
    // A caller granted nothing is refused as a whole (the stream ends before any name is resolved).
    const refusal = catalog.refusal();
    if (refusal !== undefined) decisions.refused('*', refusal);
    return catalog;
  }

  /**
   * Replaces the policy (workload entries, identity template; a config reload; also called with the
   * same policy after the store's alias names changed). New streams get the new policy; each open
   * stream's caller is granted anew, and only streams whose answer changed are told (see
   * CallerCatalog.regrant): a withdrawn identity ends its streams with PERMISSION_DENIED, a granted
   * one is served, every other stream sees nothing.
   */
  setPolicy(policy: AuthorizationPolicy): void {
    this.opts.policy = policy;
    for (const catalog of [...this.catalogs]) {
      const grant = grantFor(policy, catalog.caller);
      catalog.regrant(grant);
    }
    for (const record of this.connections.values()) {
      const who: Caller = { pid: record.report.pid, uid: record.report.uid, gid: record.report.gid, selectors: record.report.selectors };
      record.report.identities = grantFor(policy, who).identities;
    }
  }

  status(): AuthorizationReport {
    const { policy } = this.opts;
    return {
      enabled: true,
      summary: 'authorization is on: each caller is attested (SO_PEERCRED + selectors) and gets only the identities its workload entries or the identity template grant',
      workloads: policy.workloads.length,
      ...(policy.template ? { identityTemplate: policy.template.text } : {}),
      connections: [...this.connections.values()].map((r) => ({ ...r.report, granted: [...r.report.granted], refused: [...r.report.refused] })),
      recentlyRefused: [...this.recentlyRefused],
      ...(this.opts.onDemand && policy.template ? { onDemand: this.opts.onDemand.status() } : {}),
    };
  }
}
