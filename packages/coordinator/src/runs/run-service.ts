import type { AttributeListResponse, DerivationView, EvaluatingRun, RunTimeline, RunView, SubmitRunRequest } from '@nixfarm/shared';
import type { JobsetSubmission } from './jobset-submission.js';
import type { EvaluatedRun } from './run-evaluation.js';
import type { RunSubmission } from './run-submission.js';
import type { RunCancellation } from './run-cancellation.js';
import type { RunResume } from './run-resume.js';
import type { RunQueries } from './run-queries.js';
import type { ImagePublishQueue } from '../images/image-publish-queue.js';

/** The systems a run's life is split into; the composition root (coordinator-systems.ts) builds them. */
export interface RunServiceSystems {
  submission: Pick<RunSubmission, 'submit' | 'submitEvaluated'>;
  jobsets: Pick<JobsetSubmission, 'submit' | 'stopEvaluation'>;
  cancellation: Pick<RunCancellation, 'cancel'>;
  resume: Pick<RunResume, 'resume'>;
  queries: Pick<RunQueries, 'get' | 'derivations' | 'list' | 'attributes' | 'evaluating' | 'timeline'>;
  /** refuses a run whose image publishing cannot work (a bad credentials file) before anything is built */
  images?: Pick<ImagePublishQueue, 'checkRequest'>;
}

/**
 * Runs as the HTTP API sees them: a thin facade over the systems that submit
 * (evaluate, plan, register, dispatch), cancel, resume and answer queries.
 * Ending a run is the finalizer's (run-finalizer.ts), which submissions,
 * resumes and worker reports call.
 */
export class RunService {
  constructor(private readonly systems: RunServiceSystems) {}

  async submit(request: SubmitRunRequest): Promise<RunView> {
    await this.systems.images?.checkRequest(request);
    return request.jobset === true ? this.systems.jobsets.submit(request) : this.systems.submission.submit(request);
  }

  /** Starts a run from an already evaluated plan (the scheduler bench skips Nix this way). */
  submitEvaluated(request: SubmitRunRequest, evaluated: EvaluatedRun, runId?: string): Promise<RunView> {
    return this.systems.submission.submitEvaluated(request, evaluated, runId);
  }

  /** A jobset run still evaluating stops evaluating too: marked first, so that its evaluation cannot close and end the run meanwhile. */
  async cancel(runId: string): Promise<RunView> {
    const stopping = this.systems.jobsets.stopEvaluation(runId);
    const view = await this.systems.cancellation.cancel(runId);
    await stopping;
    return view.evaluation === undefined ? view : this.systems.queries.get(runId);
  }

  resume(options: { afterRestart?: boolean } = {}): Promise<number> {
    return this.systems.resume.resume(options);
  }

  get(runId: string): Promise<RunView> {
    return this.systems.queries.get(runId);
  }

  derivations(runId: string): Promise<DerivationView[]> {
    return this.systems.queries.derivations(runId);
  }

  /** Where the run's time went: per derivation, per worker, the critical path and the bottleneck. */
  timeline(runId: string): Promise<RunTimeline> {
    return this.systems.queries.timeline(runId);
  }

  attributes(runId: string, offset: number, limit: number): Promise<AttributeListResponse> {
    return this.systems.queries.attributes(runId, offset, limit);
  }

  list(limit?: number): Promise<RunView[]> {
    return this.systems.queries.list(limit);
  }

  /** The jobset runs evaluating now, with their progress (`nixfarm status`). */
  evaluating(): Promise<EvaluatingRun[]> {
    return this.systems.queries.evaluating();
  }
}
