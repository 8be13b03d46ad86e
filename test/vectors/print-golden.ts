// Prints the recorded golden vectors as `name hex` lines for test/vectors/crosscheck (Go), only when run
// with --print (the test runner also loads every file under test/).

import { RECORDED_GOLDEN } from './atrest-golden.js';

if (process.argv.includes('--print')) {
  for (const [name, hex] of Object.entries(RECORDED_GOLDEN)) console.log(`${name} ${hex}`);
}
