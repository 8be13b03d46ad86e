// The AbortSignal a unary handler sees (lean-server.ts). Created only when a
// handler reads `signal` (most never do), so an ordinary call allocates no AbortController.

import type { GrpcStatusError } from './status.js';

export class CallAbort {
  private controller: AbortController | undefined = undefined;

  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    return this.controller.signal;
  }

  abort(reason: GrpcStatusError): void {
    this.controller ??= new AbortController();
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }
}
