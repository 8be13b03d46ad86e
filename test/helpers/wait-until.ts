// Test helper: waits for a condition (an event the test cannot subscribe to, such as a file that
// disappears), checking it again and again. The deadline only turns a hang into a clear failure;
// nothing is asserted about how long the condition took.

export async function waitUntil(
  what: string,
  check: () => Promise<boolean> | boolean,
  deadlineMs = 30_000,
): Promise<void> {
  const give = Date.now() + deadlineMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > give) throw new Error(`gave up waiting for ${what} after ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
