import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { abortError, raceAbort, sleep, timedOut } from '../src/core/abort.js';
import { ErrorCode, SdsError } from '../src/core/errors.js';
import { isSelfSigned } from '../src/x509/certificate-info.js';
import { createIntermediateCa, createRootCa, issueLeaf } from '../src/x509/issue.js';

describe('isSelfSigned (src/x509, the one copy the CA backends and the CA source use)', async () => {
  const root = await createRootCa({ commonName: 'root' });
  const intermediate = await createIntermediateCa(root, { commonName: 'intermediate' });
  const leaf = await issueLeaf(intermediate, { spiffeId: 'spiffe://example.org/a' });
  // A certificate with the root's subject as its issuer but signed by another key: names alone do not make it self-signed.
  const otherRoot = await createRootCa({ commonName: 'root' });
  const rows: Array<[string, X509Certificate | string | Buffer, boolean]> = [
    ['a root (PEM)', root.certPem, true],
    ['a root (DER)', new X509Certificate(root.certPem).raw, true],
    ['a root (parsed)', new X509Certificate(root.certPem), true],
    ['another root with the same name', otherRoot.certPem, true],
    ['an intermediate', intermediate.certPem, false],
    ['a leaf', leaf.certPem, false],
    ['text that is not a certificate', 'not a certificate', false],
    ['empty bytes', Buffer.alloc(0), false],
  ];
  for (const [what, cert, expected] of rows) {
    it(`${what}: ${expected}`, () => expect(isSelfSigned(cert)).toBe(expected));
  }
});

describe('abort helpers (src/core/abort.ts)', () => {
  it('abortError: code, AbortError name, the reason in the message, the reason as cause', () => {
    const controller = new AbortController();
    const reason = new DOMException('no answer within 10 ms', 'TimeoutError');
    controller.abort(reason);
    const err = abortError(ErrorCode.CaUnavailable, 'cfssl request to http://ca/', controller.signal);
    expect(err).toBeInstanceOf(SdsError);
    expect(err).toMatchObject({ code: 'SDS_ERR_CA_UNAVAILABLE', name: 'AbortError', message: 'cfssl request to http://ca/ aborted: no answer within 10 ms' });
    expect(err.cause).toBe(reason);
    expect(timedOut(controller.signal)).toBe(true);
  });

  it('raceAbort rejects at once when the signal aborts, though the call never settles', async () => {
    const controller = new AbortController();
    const never = new Promise<string>(() => {});
    const raced = raceAbort(never, controller.signal, () => new SdsError(ErrorCode.CaUnavailable, 'cancelled'));
    controller.abort();
    await expect(raced).rejects.toMatchObject({ code: 'SDS_ERR_CA_UNAVAILABLE', message: 'cancelled' });
    expect(timedOut(controller.signal)).toBe(false);
  });

  it('raceAbort settles as the call does when the signal stays quiet, and refuses at once on an aborted signal', async () => {
    const signal = new AbortController().signal;
    await expect(raceAbort(Promise.resolve(7), signal, () => new Error('no'))).resolves.toBe(7);
    await expect(raceAbort(Promise.reject(new Error('the call failed')), signal, () => new Error('no'))).rejects.toThrow('the call failed');
    // The call's own later rejection must not become an unhandled rejection.
    await expect(raceAbort(Promise.reject(new Error('late')), AbortSignal.abort(), () => new Error('aborted first'))).rejects.toThrow('aborted first');
  });

  it('sleep resolves after its time and rejects as soon as the signal aborts', async () => {
    const t0 = performance.now();
    await sleep(20, new AbortController().signal, () => new Error('no'));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(15);
    const controller = new AbortController();
    const long = sleep(60_000, controller.signal, () => new SdsError(ErrorCode.CaUnavailable, 'stopped'));
    controller.abort();
    await expect(long).rejects.toThrow('stopped');
  });
});
