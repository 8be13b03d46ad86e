// The node:http2 transport (server.ts behind the :authority normaliser) is no longer the default but
// stays available: the server, :authority and close suites run again against it.

import { useTransport } from './fixture.js';

useTransport('node-http2');
await import('./server.test.js');
await import('./authority.test.js');
await import('./close.test.js');
