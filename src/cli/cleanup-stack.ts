// Start-up rollback for the composition root: each resource acquired pushes how to release it;
// when a later step fails, what was acquired is released newest first (last in, first out).

export interface CleanupFailure {
  /** The name given with the undo step. */
  readonly name: string;
  readonly error: unknown;
}

export interface CleanupStack {
  /** Registers how to undo the step that just succeeded. */
  push(name: string, undo: () => void | Promise<void>): void;
  /**
   * Runs every registered undo, newest first, and empties the stack. A failing undo does not stop
   * the others: every failure is returned (in the order they happened), none is thrown.
   */
  unwind(): Promise<CleanupFailure[]>;
}

export function createCleanupStack(): CleanupStack {
  const steps: { name: string; undo: () => void | Promise<void> }[] = [];
  return {
    push(name, undo) {
      steps.push({ name, undo });
    },
    async unwind() {
      const failures: CleanupFailure[] = [];
      for (let step = steps.pop(); step !== undefined; step = steps.pop()) {
        try {
          await step.undo();
        } catch (error) {
          failures.push({ name: step.name, error });
        }
      }
      return failures;
    },
  };
}
