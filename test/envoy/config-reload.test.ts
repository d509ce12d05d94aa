/**
 * Issue 13 with real Envoy: a config reload that removes one secret and adds another leaves the
 * stream of a secret it does not concern alone (same server-side stream, no update in Envoy's
 * `sds.<name>.update_attempt`), reports the removed one to its stream, and serves the new one to a
 * listener that Envoy adds afterwards.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { expect, it } from 'vitest';
import { startApp } from '../../src/cli/app.js';
import { createLogger } from '../../src/core/logger.js';
import { describeWithEnvoy } from './find-envoy.js';
import { EnvoyProcess, freePorts, sameSerial, sdsListenersBootstrap, sdsTlsListener, waitUntil, writeBootstrap, writeLdsFile, type SdsApiType } from './harness.js';
import { FileSecretsServer, perTestSdsAndEnvoy, spiffeId } from './sds-fixture.js';

const FRONT = spiffeId('front');
const BACK = spiffeId('back');
const EXTRA = spiffeId('extra');
const stat = (name: string, counter: string): string => `sds.${name.replace('://', '_')}.${counter}`;

describeWithEnvoy('Envoy end to end: a config reload touches only the streams of what it changes', (envoyBin) => {
  const held = perTestSdsAndEnvoy();

  for (const apiType of ['GRPC', 'DELTA_GRPC'] as const satisfies readonly SdsApiType[]) {
    it(`${apiType}: front's stream is untouched, back is reported gone, extra is served to the listener added after the reload`, async () => {
      const server = await FileSecretsServer.create([FRONT, BACK, EXTRA]);
      held.sds = server;
      let served = [FRONT, BACK];
      const logger = createLogger({ level: 'info', write: (line) => server.log.push(line) });
      server.app = await startApp(server.config(served), logger, { load: () => server.config(served) });
      const [adminPort, frontPort, backPort, extraPort] = (await freePorts(4)) as [number, number, number, number];
      const sdsOpts = { apiType, backOff: { baseInterval: '0.1s', maxInterval: '1s' } };
      const listener = (name: string, port: number, certificate: string) => sdsTlsListener({ name, port, certificate, sds: sdsOpts });
      const ldsFile = path.join(server.dir, 'lds', 'lds.yaml');
      await mkdir(path.dirname(ldsFile));
      await writeLdsFile(ldsFile, [listener('front', frontPort, FRONT), listener('back', backPort, BACK)]);
      const bootstrap = await writeBootstrap(server.dir, 'envoy', sdsListenersBootstrap({ nodeId: `reload-${apiType}`, adminPort, socketPath: server.socketPath(), ldsFile }));
      held.envoy = await EnvoyProcess.start({ bin: envoyBin, name: `reload envoy (${apiType})`, bootstrapFile: bootstrap, adminPort });
      const e = held.envoy;

      const kind = apiType === 'GRPC' ? 'sotw' : 'delta';
      const streamFor = (name: string) => server.streams().find((s) => s.kind === kind && s.named.includes(name));
      await waitUntil('a stream for front and back, each sent its secret', () => [FRONT, BACK].every((n) => streamFor(n)?.sent.includes(n)), { timeoutMs: 10_000 });
      await waitUntil('Envoy to hold both certificates', async () => (await e.certs()).certificates.length === 2, { timeoutMs: 10_000 });
      const frontStream = streamFor(FRONT)!.id;
      const frontUpdates = await e.stat(stat(FRONT, 'update_attempt'));

      served = [FRONT, EXTRA];
      expect(await server.app.reloadConfig('test')).toMatchObject({ outcome: 'applied', generation: 2 });
      // Envoy adds a listener for the new secret: served on its own stream.
      await writeLdsFile(ldsFile, [listener('front', frontPort, FRONT), listener('back', backPort, BACK), listener('extra', extraPort, EXTRA)]);
      const extra = server.leaves.get(EXTRA)!;
      await waitUntil('Envoy /certs to show the extra certificate', async () => (await e.certs()).certificates.some((c) => sameSerial(c.cert_chain?.[0]?.serial_number, extra.serialNumber)), { timeoutMs: 10_000 });

      // Removed: SotW ends back's stream (unknown name, Envoy retries and is told again);
      // Delta answers removed_resources on the same stream.
      if (kind === 'sotw') {
        await waitUntil('back stream ended', () => server.app?.streams().recentlyClosed.some((s) => s.named.includes(BACK)), { timeoutMs: 10_000 });
      } else {
        await waitUntil('back unknown to the server', () => server.app?.store.get(BACK) === undefined);
      }
      // Front: the same stream, still open, and Envoy received nothing more for it.
      expect(streamFor(FRONT)?.id).toBe(frontStream);
      expect(await e.stat(stat(FRONT, 'update_attempt'))).toBe(frontUpdates);
      expect(await e.stat(stat(FRONT, 'update_rejected'), { orZero: true })).toBe(0);
      expect(await e.stat(stat(EXTRA, 'update_success'))).toBeGreaterThan(0);
    }, 60_000);
  }
});
