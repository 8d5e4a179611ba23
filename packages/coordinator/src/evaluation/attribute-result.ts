import { z } from 'zod';

/** Why an attribute has no derivation: for reports that tell evaluation faults from the evaluator's own trouble. */
export const ATTRIBUTE_ERROR_KINDS = ['evaluation-error', 'not-a-derivation', 'out-of-memory', 'timed-out', 'evaluator-crashed', 'evaluator-killed'] as const;
export type AttributeErrorKind = (typeof ATTRIBUTE_ERROR_KINDS)[number];

/**
 * One attribute of a jobset, as soon as it is known. The field names are
 * nix-eval-jobs' (`attr`, `attrPath`, `drvPath`, `outputs`, `system`,
 * `name`, `error`) so tools that read its JSON lines read ours; `errorKind`
 * is nixfarm's own.
 */
export const attributeResultSchema = z.union([
  z.object({
    attr: z.string(),
    attrPath: z.array(z.string()).min(1),
    drvPath: z.string().endsWith('.drv'),
    name: z.string(),
    system: z.string(),
    outputs: z.record(z.string(), z.string()),
  }),
  z.object({
    attr: z.string(),
    attrPath: z.array(z.string()).min(1),
    error: z.string().min(1),
    errorKind: z.enum(ATTRIBUTE_ERROR_KINDS),
  }),
]);

export type AttributeResult = z.infer<typeof attributeResultSchema>;
export type FailedAttribute = Extract<AttributeResult, { error: string }>;

export function isFailedAttribute(result: AttributeResult): result is FailedAttribute {
  return 'error' in result;
}
