// The AbortSignal a unary handler sees (lean-server.ts). Created only when a handler (or a backend it
// calls) reads `signal` -- most never do -- so an ordinary call allocates no AbortController (one
// costs several microseconds, a large share of a whole RPC).

import type { GrpcStatusError } from './status.js';

export class CallAbort {
  private controller: AbortController | undefined = undefined;
  private reason: GrpcStatusError | undefined = undefined;

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.reason !== undefined) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  /** Why the call was aborted (deadline, client cancel, connection closed), if it was. No allocation. */
  get abortReason(): GrpcStatusError | undefined {
    return this.reason;
  }

  abort(reason: GrpcStatusError): void {
    if (this.reason !== undefined) return;
    this.reason = reason;
    this.controller?.abort(reason);
  }
}
