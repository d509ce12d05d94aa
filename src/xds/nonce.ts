import { randomBytes } from 'node:crypto';

/**
 * Nonces unique across this process and, thanks to a random prefix, across restarts,
 * so an Envoy that reconnects to a restarted server never matches an old nonce by chance.
 */
export class NonceSource {
  private counter = 0;
  private readonly prefix = randomBytes(4).toString('hex');

  next(): string {
    this.counter += 1;
    return `${this.prefix}-${this.counter.toString(36)}`;
  }
}
