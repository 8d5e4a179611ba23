import type { AnyGraphOperation } from './graph-operation.js';
import { cancelRunOperation } from './cancel-run.js';
import { closeRunOperation } from './close-run.js';
import { endRunOperation } from './end-run.js';
import { finishDerivationOperation } from './finish-derivation.js';
import { growRunOperation } from './grow-run.js';
import { handBackOperation } from './hand-back.js';
import { markStartedOperation } from './mark-started.js';
import { openRunOperation } from './open-run.js';
import { registerRunOperation } from './register-run.js';
import { requeueOperation } from './requeue.js';

/** Every Lua operation on the graph: defined on a connection at once, and checked against the TypeScript constants by a unit test. */
export const GRAPH_OPERATIONS: readonly AnyGraphOperation[] = [
  openRunOperation,
  registerRunOperation,
  growRunOperation,
  closeRunOperation,
  markStartedOperation,
  finishDerivationOperation,
  requeueOperation,
  handBackOperation,
  cancelRunOperation,
  endRunOperation,
];
