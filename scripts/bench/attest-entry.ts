/**
 * Bench-only server for `npm run bench:attestation`: the real SdsServer (one TLS secret in a
 * SecretStore) with caller attestation on (SO_PEERCRED + unix attestor + pid-reuse re-check) or
 * off, and an IPC channel that reports, per accepted connection, how long attestation took
 * (accept -> caller resolved): the latency a stream that waits for its caller pays at most.
 *
 * When SdsServer accepts `catalogFor` (authorization, issue 11), it is passed too, so streams wait
 * for their caller's attestation before their first response, as with authorization on; without
 * it, attestation runs beside the stream.
 *
 * Usage (by attestation.ts, compiled): node attest-entry.js --socket S --attest on|off --cert F --key F --name N
 */
import fs from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { CallerAttestation } from '../../src/attestation/caller-attestation.js';
import { UnixWorkloadAttestor } from '../../src/attestation/unix-attestor.js';
import type { Caller, PeerCredentials } from '../../src/attestation/types.js';
import type { ProcessStartTime } from '../../src/attestation/caller-attestation.js';
import { createLogger } from '../../src/core/logger.js';
import { SecretStore } from '../../src/secrets/store.js';
import { validateTlsCertificate } from '../../src/secrets/validate-tls-certificate.js';
import { SdsServer, type SdsServerOptions } from '../../src/server/sds-server.js';
import { sampleProcess, serveIpc } from './common.js';

const { values } = parseArgs({ options: { socket: { type: 'string' }, attest: { type: 'string' }, cert: { type: 'string' }, key: { type: 'string' }, name: { type: 'string' } } });
const name = values.name!;
const attest = values.attest === 'on';

/** Times every attestation from accept (begin) to its end. */
class TimedAttestation extends CallerAttestation {
  readonly durations: number[] = [];
  failures = 0;
  override async attest(peer: PeerCredentials, startTime: ProcessStartTime): Promise<Caller> {
    const t0 = performance.now();
    try {
      return await super.attest(peer, startTime);
    } catch (err) {
      this.failures += 1;
      throw err;
    } finally {
      this.durations.push(performance.now() - t0);
    }
  }
}

let errors = 0;
const log = createLogger({
  level: 'warn',
  write: (line) => {
    errors += 1;
    if (errors <= 5) process.stderr.write(`[attest-entry] ${line}\n`);
  },
});
const store = new SecretStore();
store.declare(name, 'tls-certificate');
const validated = validateTlsCertificate({
  certificateChainPem: await fs.readFile(values.cert!, 'utf8'),
  privateKeyPem: await fs.readFile(values.key!, 'utf8'),
  certFile: values.cert!,
  keyFile: values.key!,
});
if (!validated.ok) throw new Error(validated.problem.message);
store.publish(name, validated.value);
store.markSettled();

const attestation = attest ? new TimedAttestation({ attestors: [new UnixWorkloadAttestor()] }) : undefined;
// The load generator is one uid: lift the per-uid connection cap so the storm measures attestation.
const options: SdsServerOptions = { socketPath: values.socket!, catalog: store, log, limits: { maxConnectionsPerUid: 100_000 }, ...(attestation ? { attestation } : {}) };
// With authorization merged, a per-caller catalog makes streams wait for attestation (see header).
if (attestation) Object.assign(options, { catalogFor: () => store });
const server = new SdsServer(options);
await server.start();

serveIpc({
  sample: (args) => ({ ...sampleProcess(args.gc === true), errors }),
  /** Attestation durations (ms) since the last call, and failures. */
  attestations: () => {
    const out = { durations: attestation ? attestation.durations.splice(0) : [], failures: attestation?.failures ?? 0 };
    if (attestation) attestation.failures = 0;
    return out;
  },
  stop: async () => {
    await server.stop(1000);
    setImmediate(() => process.exit(0));
    return {};
  },
});
process.send?.({ ready: true });
